#!/bin/bash
# Smallest useful guest script: loads Jool, adds an instance, prints its state.
#   test/jool/run.sh test/jool/guest/smoke.sh
set -euo pipefail
uname -a
modprobe jool
ip netns add smoke
ip netns exec smoke jool instance add smoke --netfilter --pool6 2001:db8:64::/96
ip netns exec smoke jool -i smoke pool4 add 192.0.2.1 2000-3000 --tcp
# A static BIB entry's IPv4 transport address must belong to pool4.
ip netns exec smoke jool -i smoke pool4 add 192.0.2.1 21 --tcp
ip netns exec smoke jool -i smoke bib add 2001:db8::10#21 192.0.2.1#21 --tcp
ip netns exec smoke jool -i smoke bib display --tcp --numeric | tee "$FTPALG_OUT/smoke-bib.txt"
ip netns exec smoke jool instance display
lsmod | grep -E '^jool' || true
