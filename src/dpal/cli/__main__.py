import sys

from dpal.cli import main

sys.exit(main())
