#!/usr/bin/env bash
# Prints the Debian package version of this checkout, from git:
#   tag v1.2.3 on HEAD             -> 1.2.3
#   7 commits after v1.2.3         -> 1.2.3+git7.gabc1234
#   no v* tag yet                  -> 0.0~git<commits>.g<hash>  (sorts below 0.0
#                                     and any tag; the commit count keeps
#                                     builds of main in order)
#   uncommitted changes            -> ... +dirty
# The binary's own `hidiffd version` is `git describe --always --dirty`.
set -euo pipefail
cd "$(dirname "$0")/.."
dirty=""
if ! git diff --quiet HEAD -- 2>/dev/null; then dirty="+dirty"; fi
if d="$(git describe --tags --long --match 'v[0-9]*' 2>/dev/null)"; then
  # v1.2.3-7-gabc1234
  base="${d%-*-g*}"; rest="${d#"$base"-}"; n="${rest%%-*}"; hash="${rest#*-}"
  base="${base#v}"
  if [ "$n" = 0 ]; then v="$base"; else v="$base+git$n.$hash"; fi
else
  v="0.0~git$(git rev-list --count HEAD).g$(git rev-parse --short=7 HEAD)"
fi
echo "$v$dirty"
