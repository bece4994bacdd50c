from add3d.cli import main

raise SystemExit(main())
