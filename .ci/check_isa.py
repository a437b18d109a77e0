#!/usr/bin/env python3
"""Check that AVX2/AVX-512 code cannot leak into the baseline x86-64 paths of the compiled core.

The trap: an inline function or template instantiation (std:: or ours) compiled in the AVX-512
translation unit is emitted there as a weak/COMDAT symbol; if the baseline code uses the same
symbol, the linker keeps one copy, possibly the AVX-512 one, and an older CPU dies of SIGILL
in code that was meant to be portable. The same goes for a dynamic initializer in an AVX
translation unit (it runs at import, on every CPU).

Usage: check_isa.py BUILD_DIR [EXTENSION.so ...]

BUILD_DIR is a CMake build tree of bpfast (e.g. build/cp311-cp311-linux_x86_64 after `pip
wheel .`); its object files are classified by name: *_avx2.cpp.o and *_avx512.cpp.o are the
per-ISA translation units, every other object is baseline. Rules:

- ISA objects define no global or weak symbol other than their entry points
  (bpfast::gemm_<isa>::{sgemm, dgemm, mgemm, fma_probe_f32, fma_probe_f64, blocking},
  bpfast::ops_<isa>::table), have no COMDAT groups, and have no
  .init_array/.ctors/.fini_array (no code that runs at load or exit). AVX2 objects hold VEX
  code and no EVEX (AVX-512) instruction; AVX-512 objects hold EVEX code (so the flags did
  apply).
- Baseline objects hold no VEX/EVEX instruction and nothing beyond SSE2 (no SSE3/SSSE3/SSE4,
  POPCNT, LZCNT, BMI, MOVBE): they run on any x86-64.
- Each linked extension (the build tree's, and any given) exports only PyInit__core, and holds
  exactly as many VEX and EVEX instructions as the ISA objects: none came from elsewhere.

Needs binutils (objdump, nm, readelf). Exits 1 with a list of findings, 0 when clean; on
anything but x86-64 ELF objects it says so and exits 0.
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

LEGACY_PREFIXES = {0x26, 0x2E, 0x36, 0x3E, 0x64, 0x65, 0x66, 0x67, 0xF0, 0xF2, 0xF3}
# Legacy-encoded instructions beyond x86-64's baseline (SSE2) that compilers emit when allowed.
BEYOND_SSE2 = re.compile(
    r"^(addsubp[sd]|h(add|sub)p[sd]|lddqu|movddup|movs[hl]dup|fisttp"  # SSE3
    r"|pabs[bwd]|palignr|ph(add|sub)(w|d|sw)|pmaddubsw|pmulhrsw|pshufb|psign[bwd]"  # SSSE3
    r"|blendv?p[sd]|dpp[sd]|extractps|insertps|movntdqa|mpsadbw|packusdw|pblendvb|pblendw"  # SSE4.1
    r"|pcmpeqq|pextr[bdq]|phminposuw|pinsr[bdq]|pm(ax|in)(sb|sd|ud|uw)|pmov[sz]x\w*|pmuldq|pmulld"
    r"|ptest|round[ps][sd]"
    r"|crc32\w*|pcmp[ei]str[im]|pcmpgtq|popcnt|lzcnt|movbe"  # SSE4.2, POPCNT, LZCNT, MOVBE
    r"|andn|bextr|blsi|blsmsk|blsr|bzhi|mulx|pdep|pext|rorx|sarx|shlx|shrx)$"  # BMI1/2 (VEX-encoded)
)
ISA_OBJECT = re.compile(r"_(avx2|avx512)\.cpp\.o(bj)?$")
LOAD_TIME_SECTIONS = (".init_array", ".ctors", ".fini_array", ".dtors", ".preinit_array")


def run(*args: str) -> str:
    return subprocess.run(args, check=True, capture_output=True, text=True).stdout


def encoding(raw: list[int]) -> str:
    """'evex', 'vex' or 'legacy' for the bytes of one x86-64 instruction."""
    i = 0
    while i < len(raw) and raw[i] in LEGACY_PREFIXES:
        i += 1
    if i < len(raw) and 0x40 <= raw[i] <= 0x4F:  # REX
        i += 1
    if i < len(raw) and raw[i] == 0x62:  # invalid in 64-bit mode except as EVEX
        return "evex"
    if i < len(raw) and raw[i] in (0xC4, 0xC5):  # LES/LDS are invalid in 64-bit mode: VEX
        return "vex"
    return "legacy"


def instructions(path: Path):
    """(function, mnemonic, encoding) for every instruction objdump decodes in path."""
    function = "?"
    out = run("objdump", "-d", "-C", "-w", "--insn-width=15", str(path))
    for line in out.splitlines():
        head = re.match(r"^[0-9a-f]+ <(.*)>:$", line)
        if head:
            function = head.group(1)
            continue
        parts = line.split("\t")
        if len(parts) < 3 or not re.match(r"^\s*[0-9a-f]+:$", parts[0]):
            continue
        raw = [int(b, 16) for b in parts[1].split()]
        words = parts[2].split()
        mnemonic = next((w for w in words if w not in ("lock", "rep", "repz", "repnz", "data16", "notrack")), "")
        yield function, mnemonic, encoding(raw)


def isa_counts(path: Path) -> Counter:
    return Counter(enc for _, _, enc in instructions(path) if enc != "legacy")


def check_isa_object(path: Path, isa: str, problems: list[str]) -> Counter:
    entry = re.compile(rf"^bpfast::(gemm_{isa}::([sdm]gemm\(|fma_probe_f(32|64)\(|blocking$)|ops_{isa}::table$)")
    for line in run("nm", "-C", "--defined-only", "-g", str(path)).splitlines():
        kind, name = line.split(" ", 2)[1:]
        if kind in "VWuiv" or not entry.match(name):
            problems.append(f"{path.name}: exports {kind} {name} (only bpfast::gemm_{isa}/ops_{isa} entry points may be global)")
    groups = run("readelf", "-g", "-W", str(path))
    for group in re.findall(r"COMDAT group section \[\s*\d+\] `\.group' \[(.*?)\]", groups):
        problems.append(f"{path.name}: COMDAT group {group} (vague linkage: the linker may share it with baseline code)")
    sections = run("readelf", "-S", "-W", str(path))
    for section in LOAD_TIME_SECTIONS:
        if re.search(rf"\s{re.escape(section)}(\.\d+)?\s", sections):
            problems.append(f"{path.name}: has {section} (code compiled for {isa} would run at load or exit)")
    counts = isa_counts(path)
    if isa == "avx2" and counts["evex"]:
        problems.append(f"{path.name}: {counts['evex']} EVEX (AVX-512) instructions in the AVX2 translation unit")
    expected = "evex" if isa == "avx512" else "vex"
    if not counts[expected]:
        problems.append(f"{path.name}: no {expected.upper()} instruction: were the {isa} flags applied?")
    return counts


def check_baseline_object(path: Path, problems: list[str]) -> None:
    seen: dict[str, set[str]] = {}
    for function, mnemonic, enc in instructions(path):
        if enc != "legacy" or BEYOND_SSE2.match(mnemonic):
            seen.setdefault(function, set()).add(f"{mnemonic} ({enc})" if enc != "legacy" else mnemonic)
    for function, what in seen.items():
        problems.append(f"{path.name}: {function} uses {', '.join(sorted(what)[:6])}: beyond baseline x86-64")


def check_extension(path: Path, isa_total: Counter, problems: list[str]) -> None:
    exported = run("nm", "-D", "--defined-only", str(path)).split()
    names = [w for w in exported if not re.fullmatch(r"[0-9a-f]+|[A-Za-z]", w)]
    if names != ["PyInit__core"]:
        problems.append(f"{path}: exports {names[:8]} (expected only PyInit__core)")
    counts = isa_counts(path)
    for enc in ("vex", "evex"):
        if counts[enc] != isa_total[enc]:
            problems.append(
                f"{path}: {counts[enc]} {enc.upper()} instructions, the ISA objects have {isa_total[enc]}: "
                "AVX code came from somewhere else"
            )
    print(f"  {path}: {counts['vex']} VEX, {counts['evex']} EVEX instructions (the ISA objects' count)")


def main(argv: list[str]) -> int:
    if len(argv) < 2:
        print(__doc__.strip().splitlines()[0], "\nusage: check_isa.py BUILD_DIR [EXTENSION.so ...]", file=sys.stderr)
        return 2
    build = Path(argv[1])
    objects = sorted(build.rglob("*.o"))
    if not objects:
        print(f"check_isa: no object files under {build}", file=sys.stderr)
        return 1
    if "x86-64" not in run("objdump", "-f", str(objects[0])):
        print(f"check_isa: {objects[0].name} is not an x86-64 ELF object; nothing to check")
        return 0
    problems: list[str] = []
    isa_total: Counter = Counter()
    n_isa = 0
    for path in objects:
        m = ISA_OBJECT.search(path.name)
        if m:
            n_isa += 1
            isa_total += check_isa_object(path, m.group(1), problems)
        else:
            check_baseline_object(path, problems)
    print(
        f"check_isa: {n_isa} ISA objects ({isa_total['vex']} VEX, {isa_total['evex']} EVEX instructions), "
        f"{len(objects) - n_isa} baseline objects"
    )
    if n_isa != 4:
        problems.append(f"{n_isa} ISA objects under {build}, expected 4 (gemm and elementwise, avx2 and avx512)")
    for so in [*build.glob("_core*.so"), *map(Path, argv[2:])]:
        check_extension(so, isa_total, problems)
    for p in problems:
        print("  FAIL", p)
    print("check_isa:", f"{len(problems)} problems" if problems else "clean")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
