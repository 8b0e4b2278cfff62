import os
import sys

# the search tests' toy problem and tiny configs (search_toy), shared by every test folder
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "search"))
