import sys

from jscore.cli import main

sys.exit(main())
