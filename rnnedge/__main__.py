from rnnedge.cli import main

raise SystemExit(main())
