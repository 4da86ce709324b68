#!/bin/sh
# bin/emcoder of an emcoder release tarball: runs the CLI (libexec/emcoder/emcoder) with the
# model shipped next to it as its default, wherever the tarball was unpacked. (The binary's
# own default is the models/emcoder-mini of the checkout it was built in; --model and
# EMCODER_MODEL still choose another model.) Written by scripts/release.sh.
case $0 in
    */*) here=${0%/*} ;;
    *) here=. ;;
esac
prefix=$(cd "$here/.." && pwd -P) || exit 1
: "${EMCODER_MODEL:=$prefix/share/emcoder/models/emcoder-mini}"
export EMCODER_MODEL
exec "$prefix/libexec/emcoder/emcoder" "$@"
