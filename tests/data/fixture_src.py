# fixture_src.py DIR: the tree tests/data/repo-hmac-sha256 holds (its only snapshot), made anew.
import os, sys
d = sys.argv[1]
os.makedirs(os.path.join(d, "sub"), exist_ok=True)
open(os.path.join(d, "hello.txt"), "w").write("hello from a repository made before keyed BLAKE3\n")
open(os.path.join(d, "data.bin"), "wb").write(bytes((i * 131 + (i >> 7) + (i >> 13) * 7) % 256 for i in range(65536)))
open(os.path.join(d, "sub", "empty"), "wb").close()
os.symlink("../hello.txt", os.path.join(d, "sub", "link"))
