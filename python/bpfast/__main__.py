from bpfast.cli import main

raise SystemExit(main())
