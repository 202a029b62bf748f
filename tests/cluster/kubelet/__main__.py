from tests.cluster.kubelet.main import main

raise SystemExit(main())
