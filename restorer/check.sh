#!/bin/sh
# Fails unless the restorer ELF ($1) runs wherever it is copied: no
# relocations left for a loader, no writable data.
set -e
elf=$1
if readelf -rW "$elf" | grep -q 'R_X86_64'; then
  echo "restorer: $elf has relocations" >&2; readelf -rW "$elf" >&2; exit 1
fi
size=$(readelf -SW "$elf" | awk '$2 == ".data" { print $6 }')
if [ -n "$size" ] && [ "$size" != "000000" ] && [ $((0x$size)) -ne 0 ]; then
  echo "restorer: $elf has writable data ($size bytes)" >&2; exit 1
fi
