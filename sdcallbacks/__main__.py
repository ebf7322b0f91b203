import sys

from sdcallbacks.cli import main

sys.exit(main())
