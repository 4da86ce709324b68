#!/bin/sh
# bin/emcoder of an emcoder release tarball: runs the CLI (libexec/emcoder/emcoder) with the
# model shipped next to it as its default, wherever the tarball was unpacked. (The binary's
# own default is the models/emcoder-mini of the checkout it was built in; --model and
# EMCODER_MODEL still choose another model.) Written by scripts/release.sh.
# Through a link (ln -s <prefix>/bin/emcoder ~/bin/emcoder), the prefix is the target's.
self=$0
if command -v readlink >/dev/null 2>&1; then
    self=$(readlink -f -- "$0") || self=$0
fi
case $self in
    */*) here=${self%/*} ;;
    *) here=. ;;
esac
prefix=$(cd "$here/.." && pwd -P) || exit 1
: "${EMCODER_MODEL:=$prefix/share/emcoder/models/emcoder-mini}"
export EMCODER_MODEL
exec "$prefix/libexec/emcoder/emcoder" "$@"
