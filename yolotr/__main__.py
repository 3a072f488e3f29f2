import sys

from yolotr.cli import main

sys.exit(main())
