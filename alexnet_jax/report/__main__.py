import sys

from alexnet_jax.report.make import main

sys.exit(main())
