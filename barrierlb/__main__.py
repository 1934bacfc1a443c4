import sys

from barrierlb.cli import main

sys.exit(main())
