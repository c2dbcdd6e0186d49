import sys

from mobilezoo.cli import main

sys.exit(main())
