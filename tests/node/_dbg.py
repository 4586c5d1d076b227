import tempfile
import time
from pathlib import Path

from .procs import ProcessCluster, etcdctl

root = Path(tempfile.mkdtemp())
c = ProcessCluster(root, 3)
c.start()
try:
    c.wait_healthy()
    time.sleep(1.5)
    r = etcdctl(c.members[0].endpoint, "endpoint", "health", "--cluster", check=False)
    print("OUT", r.stdout, "ERR", r.stderr[-1500:])
finally:
    c.stop()
