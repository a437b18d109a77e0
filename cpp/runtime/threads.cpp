// The thread pool behind parallel_for (see bpfast/threads.hpp for the contract).
//
// A region publishes (job, n_chunks) and bumps a generation counter; workers and the caller
// take chunks from an atomic counter until none are left; the caller then waits until every
// chunk is done (never for a worker that has not woken: the caller ran its share), closes the
// region and waits for the workers inside it to leave. Workers spin on the generation for a
// short while before sleeping on a condition variable.
#include "bpfast/threads.hpp"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <mutex>
#include <string>
#include <system_error>
#include <thread>
#include <vector>

#if defined(__linux__)
#include <pthread.h>
#include <sched.h>
#elif defined(__unix__) || defined(__APPLE__)
#include <pthread.h>
#endif

#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>
#define BPFAST_PAUSE() _mm_pause()
#else
#define BPFAST_PAUSE() std::this_thread::yield()
#endif

namespace bpfast {
namespace {

constexpr auto kSpin = std::chrono::microseconds(200);

// Set while this thread runs chunks of a region (as its caller or as a worker): a parallel_for
// made from there runs inline, and kernels plan for one thread (region_threads()).
thread_local bool inside_region = false;

// Marks the current thread as inside a region for its lifetime.
class InsideRegion {
public:
    InsideRegion() { inside_region = true; }
    ~InsideRegion() { inside_region = false; }
    InsideRegion(const InsideRegion&) = delete;
    InsideRegion& operator=(const InsideRegion&) = delete;
};

class Pool {
public:
    // The threads regions run on: as set, or fewer once the system refused to start a worker.
    int threads() const { return std::min(requested(), worker_limit_.load(std::memory_order_relaxed) + 1); }
    int requested() const { return requested_.load(std::memory_order_relaxed); }
    void set_threads(int n) { requested_.store(std::max(n, 1), std::memory_order_relaxed); }

    void run(std::ptrdiff_t n_chunks, const std::function<void(std::ptrdiff_t)>& f) {
        const int wanted = static_cast<int>(std::min<std::ptrdiff_t>(threads(), n_chunks));
        // Inline: one thread wanted, a region inside a region's chunk (never try_lock a mutex
        // this thread holds), another caller's region running, or no worker could be started.
        std::unique_lock<std::mutex> region(region_mutex_, std::defer_lock);
        const int helpers = wanted > 1 && !inside_region && region.try_lock() ? ensure_workers(wanted - 1) : 0;
        if (helpers == 0) {
            for (std::ptrdiff_t c = 0; c < n_chunks; ++c) f(c);
            return;
        }
        {
            std::lock_guard<std::mutex> lock(mutex_);
            job_ = &f;
            n_chunks_ = n_chunks;
            next_.store(0, std::memory_order_relaxed);
            done_.store(0, std::memory_order_relaxed);
            participants_ = helpers;
            open_ = true;
            generation_.fetch_add(1, std::memory_order_release);
        }
        wake_.notify_all();
        take_chunks(f, n_chunks);
        // Wait for the chunks workers took (not for workers that never woke: the caller ran
        // their share). Spin, then yield the core a descheduled worker may need.
        wait_until([&] { return done_.load(std::memory_order_acquire) == n_chunks; });
        {
            // Close the region: a worker waking late finds it closed and leaves f alone.
            std::lock_guard<std::mutex> lock(mutex_);
            open_ = false;
        }
        wait_until([&] { return active_.load(std::memory_order_acquire) == 0; });
    }

    // After fork() in the child: the workers did not come along. Forget them (their
    // std::thread objects are leaked on purpose: destroying them would terminate) and
    // reset the locks, which may have been held by a parent thread.
    void forget_workers_after_fork() {
        new (&mutex_) std::mutex();
        new (&region_mutex_) std::mutex();
        new (&wake_) std::condition_variable();
        workers_ = new std::vector<std::thread>();
        worker_limit_.store(kMaxThreads);
        active_.store(0);
        open_ = false;
    }

private:
    // Start workers until there are n; returns how many there are, fewer when the system
    // refused one (a thread limit, or memory for stacks: std::system_error). The regions then
    // run on those (the caller takes what they leave), and no more are tried for.
    int ensure_workers(int n) {
        while (static_cast<int>(workers_->size()) < std::min(n, worker_limit_.load(std::memory_order_relaxed))) {
            const int index = static_cast<int>(workers_->size());
            const unsigned current = generation_.load(std::memory_order_acquire);
            try {
                workers_->emplace_back([this, index, current] { worker_loop(index, current); });
            } catch (const std::system_error&) {
                worker_limit_.store(index, std::memory_order_relaxed);
                break;
            }
            workers_->back().detach();
        }
        return std::min(n, static_cast<int>(workers_->size()));
    }

    void take_chunks(const std::function<void(std::ptrdiff_t)>& f, std::ptrdiff_t n_chunks) {
        const InsideRegion inside;
        for (std::ptrdiff_t c = next_.fetch_add(1, std::memory_order_relaxed); c < n_chunks;
             c = next_.fetch_add(1, std::memory_order_relaxed)) {
            f(c);
            done_.fetch_add(1, std::memory_order_acq_rel);
        }
    }

    template <class Ready>
    static void wait_until(Ready ready) {
        for (int spins = 0; !ready(); ++spins) {
            if (spins < 2000) {
                BPFAST_PAUSE();
            } else {
                std::this_thread::yield();
            }
        }
    }

    // seen: the last generation before this worker existed; it joins the regions after it.
    void worker_loop(int index, unsigned seen) {
        for (;;) {
            wait_for_new_generation(seen);
            const std::function<void(std::ptrdiff_t)>* job;
            std::ptrdiff_t n_chunks;
            {
                // Join the region under the lock, only while it is open: the caller then waits
                // for this worker (active_) before f goes out of scope.
                std::lock_guard<std::mutex> lock(mutex_);
                seen = generation_.load(std::memory_order_relaxed);
                if (!open_ || index >= participants_) continue;
                active_.fetch_add(1, std::memory_order_acq_rel);
                job = job_;
                n_chunks = n_chunks_;
            }
            take_chunks(*job, n_chunks);
            active_.fetch_sub(1, std::memory_order_acq_rel);
        }
    }

    void wait_for_new_generation(unsigned seen) {
        const auto spin_until = std::chrono::steady_clock::now() + kSpin;
        while (generation_.load(std::memory_order_acquire) == seen) {
            if (std::chrono::steady_clock::now() > spin_until) {
                std::unique_lock<std::mutex> lock(mutex_);
                wake_.wait(lock, [&] { return generation_.load(std::memory_order_acquire) != seen; });
                break;
            }
            for (int i = 0; i < 16; ++i) BPFAST_PAUSE();
            std::this_thread::yield();
        }
    }

    std::atomic<int> requested_{default_num_threads()};
    std::mutex region_mutex_;  // one region at a time
    std::mutex mutex_;         // guards the job description below
    std::condition_variable wake_;
    std::atomic<unsigned> generation_{0};
    const std::function<void(std::ptrdiff_t)>* job_ = nullptr;
    std::ptrdiff_t n_chunks_ = 0;
    int participants_ = 0;
    bool open_ = false;                     // the region accepts workers (guarded by mutex_)
    std::atomic<std::ptrdiff_t> next_{0};  // the next chunk to take
    std::atomic<std::ptrdiff_t> done_{0};  // chunks finished
    std::atomic<int> active_{0};           // workers inside the region
    std::vector<std::thread>* workers_ = new std::vector<std::thread>();  // never freed: detached workers
    std::atomic<int> worker_limit_{kMaxThreads};  // lowered (region_mutex_ held) to the workers the system allowed
};

// Never destroyed: detached workers may still touch it while the process exits.
Pool& pool() {
    static Pool* instance = [] {
        auto* p = new Pool();
#if defined(__unix__) || defined(__APPLE__)
        pthread_atfork(nullptr, nullptr, [] { pool().forget_workers_after_fork(); });
#endif
        return p;
    }();
    return *instance;
}

int available_cpus() {
#if defined(__linux__)
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof(set), &set) == 0) return std::max(CPU_COUNT(&set), 1);
#endif
    return std::max(static_cast<int>(std::thread::hardware_concurrency()), 1);
}

// BPFAST_NUM_THREADS as a thread count: a whole number from 1 to kMaxThreads, spaces or tabs
// around it allowed; 0 for anything else (a sign, a fraction, trailing text, too many digits),
// -1 for nothing but spaces or tabs (as if unset).
int parse_thread_count(const char* text) {
    while (*text == ' ' || *text == '\t') ++text;
    long n = 0;
    const char* p = text;
    for (; *p >= '0' && *p <= '9'; ++p) {
        n = n * 10 + (*p - '0');
        if (n > kMaxThreads) return 0;
    }
    if (p == text) return *p == '\0' ? -1 : 0;
    while (*p == ' ' || *p == '\t') ++p;
    return *p == '\0' && n >= 1 ? static_cast<int>(n) : 0;
}

// BPFAST_NUM_THREADS as the process found it, read once: the count it asks for (0: none), and
// why it was ignored ("" when unset or used), so that the note always describes the default.
struct EnvThreads {
    int count = 0;
    std::string problem;
};

const EnvThreads& env_threads() {
    static const EnvThreads read = [] {
        EnvThreads e;
        const char* env = std::getenv("BPFAST_NUM_THREADS");
        const int n = env ? parse_thread_count(env) : -1;
        if (n >= 1) e.count = n;
        if (n == 0)
            e.problem = "BPFAST_NUM_THREADS=" + std::string(env) + " ignored (not a whole number from 1 to " +
                        std::to_string(kMaxThreads) + "); the default is the " + std::to_string(available_cpus()) +
                        " CPUs this process may use";
        return e;
    }();
    return read;
}

}  // namespace

int default_num_threads() {
    const int n = env_threads().count;
    return n >= 1 ? n : available_cpus();
}

const std::string& num_threads_env_problem() { return env_threads().problem; }

int num_threads() { return pool().threads(); }

int requested_num_threads() { return pool().requested(); }

int region_threads() { return inside_region ? 1 : num_threads(); }

void set_num_threads(int n) { pool().set_threads(n); }

void parallel_for(std::ptrdiff_t n_chunks, const std::function<void(std::ptrdiff_t)>& f) {
    if (n_chunks <= 0) return;
    pool().run(n_chunks, f);
}

}  // namespace bpfast
