import sys

from automtl.cli import main

sys.exit(main())
