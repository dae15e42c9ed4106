#!/usr/bin/env bash
# Install test: does tendril work for a program outside the project, the way a user builds one?
#
# usage: install_test.sh BUILD_ROOT SOURCE_ROOT VERSION
#
#  1. `meson install --destdir` of BUILD_ROOT into a temporary directory (the library as it was just built);
#  2. the installed headers include no Boost or curl header (and, as a warning, nothing outside the standard
#     library and tendril), and each one compiles on its own;
#  3. the installed .so has the soname libtendril.so.MAJOR.MINOR and exports no boost:: or curl symbol;
#  4. test/install/consumer.cpp builds with `g++ -std=c++20 consumer.cpp $(pkg-config --cflags --libs tendril)`,
#     where pkg-config sees *only* the installed tendril.pc (no system .pc files), links the installed library,
#     runs, and prints the expected line.
# In a build directory configured with sanitizers it is skipped (exit status 77).
# PKG_CONFIG_SYSROOT_DIR maps the installed .pc's prefix (/usr/local...) into the temporary directory, as it does
# for any staged install.
set -euo pipefail

if (($# != 3)); then
  echo "usage: $0 BUILD_ROOT SOURCE_ROOT VERSION" >&2
  exit 2
fi
BUILD_ROOT="$(cd "$1" && pwd)"
SOURCE_ROOT="$(cd "$2" && pwd)"
VERSION="$3"
SONAME="libtendril.so.$(cut -d. -f1,2 <<<"$VERSION")"

# What users install is a plain build. A sanitizer build's library needs the sanitizer runtime in the consumer and
# exports extra instantiations at -O0; checking its packaging would test the sanitizer, not tendril: skip (77).
sanitize="$(meson introspect "$BUILD_ROOT" --buildoptions |
  python3 -c 'import json,sys; print(next(o["value"] for o in json.load(sys.stdin) if o["name"] == "b_sanitize"))')"
if [[ "$sanitize" != none ]]; then
  echo "SKIP: $BUILD_ROOT is built with -fsanitize=$sanitize; the install test runs in a plain build directory"
  exit 77
fi

TMP="$(mktemp -d "${TMPDIR:-/tmp}/tendril-install.XXXXXX")"
trap 'rm -rf "$TMP"' EXIT
DEST="$TMP/dest"
failures=0
fail() {
  echo "FAIL: $*" >&2
  failures=$((failures + 1))
}
step() { printf '\n-- %s\n' "$*"; }

step "meson install -C $BUILD_ROOT --destdir $DEST"
meson install -C "$BUILD_ROOT" --no-rebuild --destdir "$DEST" --quiet

pc="$(find "$DEST" -name tendril.pc -print -quit)"
[[ -n "$pc" ]] || {
  echo "FAIL: no tendril.pc installed" >&2
  exit 1
}
pcdir="$(dirname "$pc")"
# Only the installed tendril.pc is visible: a consumer must not need libcurl.pc or any other -dev package's .pc.
export PKG_CONFIG_LIBDIR="$pcdir" PKG_CONFIG_PATH="" PKG_CONFIG_SYSROOT_DIR="$DEST"
# pkg-config prefixes these with the sysroot already.
prefix="$(pkg-config --variable=prefix tendril)"
libdir="$(pkg-config --variable=libdir tendril)"
includedir="$(pkg-config --variable=includedir tendril)"
[[ "$libdir" == "$DEST"/* ]] || libdir="$DEST$libdir"  # a pkg-config that leaves variables alone
[[ "$includedir" == "$DEST"/* ]] || includedir="$DEST$includedir"
echo "installed: prefix $prefix, pc $pc"
echo "pkg-config --cflags --libs tendril: $(pkg-config --cflags --libs tendril)"
grep -E '^(Requires|Libs)' "$pc" | sed 's/^/  /'

step "installed headers"
[[ -f "$includedir/tendril/greenlet.hpp" ]] || fail "no $includedir/tendril/greenlet.hpp"
mapfile -t headers < <(cd "$includedir" && find tendril -type f \( -name '*.hpp' -o -name '*.h' \) | sort)
echo "${#headers[@]} headers: ${headers[*]}"
if bad="$(grep -rEn '^[[:space:]]*#[[:space:]]*include[[:space:]]*[<"](boost|curl)/' "$includedir/tendril")"; then
  fail "installed headers include Boost or curl:"$'\n'"$bad"
fi
# Anything but <standard_header> and tendril's own headers: a warning (DESIGN.md: only the standard library).
if other="$(grep -rEn '^[[:space:]]*#[[:space:]]*include' "$includedir/tendril" |
  grep -Ev '#[[:space:]]*include[[:space:]]*(<[a-z_0-9]+>|[<"]tendril/[^">]+[">])')"; then
  echo "WARNING: installed headers include something outside the standard library and tendril:" >&2
  echo "$other" >&2
fi
# Each header compiles on its own, with the installed headers only.
read -r -a cflags <<<"$(pkg-config --cflags tendril)"
for h in "${headers[@]}"; do
  printf '#include <%s>\n' "$h" >"$TMP/one-$(tr '/.' '__' <<<"$h").cpp"
done
if ! printf '%s\n' "$TMP"/one-*.cpp | xargs -P 2 -I{} g++ -std=c++20 -fsyntax-only -Wall -Wextra -Werror "${cflags[@]}" {}
then
  fail "an installed header does not compile on its own (see above)"
fi

step "shared library"
so="$libdir/$SONAME"
[[ -e "$so" ]] || fail "$so is not installed"
[[ -e "$libdir/libtendril.so" ]] || fail "$libdir/libtendril.so (the development symlink) is not installed"
soname="$(readelf -d "$libdir/libtendril.so" | sed -n 's/.*(SONAME).*\[\(.*\)\]/\1/p' || true)"
echo "SONAME: $soname"
[[ "$soname" == "$SONAME" ]] || fail "SONAME is '$soname', expected '$SONAME'"
readelf -d "$libdir/libtendril.so" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/  needs \1/p'
nm -D --defined-only "$libdir/libtendril.so" | c++filt >"$TMP/exports.txt"
total="$(wc -l <"$TMP/exports.txt")"
in_tendril="$(grep -c 'tendril::' "$TMP/exports.txt" || true)"
echo "exported symbols: $total ($in_tendril mention tendril::)"
if grep -E 'boost::| curl_|Curl_' "$TMP/exports.txt" >"$TMP/leaked.txt"; then
  fail "$(wc -l <"$TMP/leaked.txt") exported symbols from Boost or curl, e.g.:"$'\n'"$(head -20 "$TMP/leaked.txt")"
fi
if grep -v 'tendril' "$TMP/exports.txt" >"$TMP/other.txt"; then
  echo "exported symbols that don't mention tendril ($(wc -l <"$TMP/other.txt"), first 10):"
  head -10 "$TMP/other.txt" | sed 's/^/  /'
fi

step "consumer: g++ -std=c++20 consumer.cpp \$(pkg-config --cflags --libs tendril)"
cd "$TMP"
cp "$SOURCE_ROOT/test/install/consumer.cpp" .
# shellcheck disable=SC2046  # word splitting of pkg-config's output is the point
g++ -std=c++20 -Wall -Wextra -Werror consumer.cpp $(pkg-config --cflags --libs tendril) -o consumer
export LD_LIBRARY_PATH="$libdir${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
resolved="$(ldd ./consumer | sed -n 's/.*libtendril[^ ]* => \([^ ]*\).*/\1/p')"
echo "consumer loads $resolved"
[[ "$resolved" == "$libdir/"* ]] || fail "the consumer loads libtendril from '$resolved', not from $libdir"
output="$(./consumer)" || fail "consumer exited with status $?"
echo "$output"
expected='consumer: ping-pong reached 10, caught "from a greenlet", ping dead=1'
[[ "$output" == "$expected" ]] || fail "consumer printed '$output', expected '$expected'"

echo
if ((failures > 0)); then
  echo "install test: $failures check(s) failed"
  exit 1
fi
echo "install test: all checks passed"
