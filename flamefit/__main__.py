import sys

from flamefit.cli import main

sys.exit(main())
