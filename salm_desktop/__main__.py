from salm_desktop.cli import main

raise SystemExit(main())
