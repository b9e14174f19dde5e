#!/usr/bin/env bash
# The third-party files of the web client, committed in the repository (the app never loads
# anything from another origin) and fetched from npm at pinned versions by this script:
#   KaTeX (MIT)                  maths             -> services/gateway/parley_gateway/web/vendor/katex/
#   highlight.js, common build   code highlighting -> services/gateway/parley_gateway/web/vendor/highlight/
#     (BSD-3-Clause; the a11y-light and a11y-dark themes, made for WCAG contrast)
#   axe-core (MPL-2.0)           accessibility checks in tests/browser only (never served)
#                                                  -> tests/browser/vendor/axe-core/
# Every file, and each npm tarball it came from, has its sha256 in tools/vendor-web.sha256.
#
#   tools/vendor-web.sh           fetch the pinned tarballs with npm, check every sha256, install
#                                 (fails, changing nothing, when a single byte differs)
#   tools/vendor-web.sh --check   only check the committed files against the sums (offline)
#   tools/vendor-web.sh --update  after changing a version below: fetch, install and write new
#                                 sums (review the diff of tools/vendor-web.sha256, then commit)
set -euo pipefail
cd "$(dirname "$0")/.."

PACKAGES=(katex@0.19.1 @highlightjs/cdn-assets@11.12.0 axe-core@4.14.1)
WEB=services/gateway/parley_gateway/web/vendor
AXE=tests/browser/vendor/axe-core
SUMS=tools/vendor-web.sha256

# "<npm tarball> <path in it> <destination>"; a * in the path takes every file it matches.
FILES=(
  "katex-0.19.1.tgz package/LICENSE $WEB/katex/LICENSE"
  "katex-0.19.1.tgz package/dist/katex.mjs $WEB/katex/katex.mjs"
  "katex-0.19.1.tgz package/dist/katex.min.css $WEB/katex/katex.min.css"
  # Only the WOFF2 fonts: the style sheet lists them first and every browser the app supports
  # reads them, so the .woff and .ttf copies would never be fetched.
  "katex-0.19.1.tgz package/dist/fonts/*.woff2 $WEB/katex/fonts/"
  "highlightjs-cdn-assets-11.12.0.tgz package/LICENSE $WEB/highlight/LICENSE"
  "highlightjs-cdn-assets-11.12.0.tgz package/es/highlight.min.js $WEB/highlight/highlight.min.js"
  "highlightjs-cdn-assets-11.12.0.tgz package/styles/a11y-light.min.css $WEB/highlight/a11y-light.min.css"
  "highlightjs-cdn-assets-11.12.0.tgz package/styles/a11y-dark.min.css $WEB/highlight/a11y-dark.min.css"
  "axe-core-4.14.1.tgz package/LICENSE $AXE/LICENSE"
  "axe-core-4.14.1.tgz package/LICENSE-3RD-PARTY.txt $AXE/LICENSE-3RD-PARTY.txt"
  "axe-core-4.14.1.tgz package/axe.min.js $AXE/axe.min.js"
)

mode=${1:-fetch}
case "$mode" in
  fetch | --update | --check) ;;
  *) echo "usage: $0 [--check | --update]" >&2; exit 2 ;;
esac

if [ "$mode" = --check ]; then
  grep -v '  npm/' "$SUMS" | sha256sum --check --quiet --strict
  echo "vendored web files match $SUMS"
  exit 0
fi

command -v npm >/dev/null || { echo "npm is needed: apt-get install -y npm" >&2; exit 1; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/npm" "$work/stage"
for package in "${PACKAGES[@]}"; do
  # npm checks each tarball against the registry's own sha512 before it writes it.
  npm pack --silent --pack-destination "$work/npm" "$package" >/dev/null
done
if [ "$mode" = fetch ]; then
  (cd "$work" && grep '  npm/' "$OLDPWD/$SUMS" | sha256sum --check --quiet --strict)
fi

for entry in "${FILES[@]}"; do
  read -r tarball path destination <<<"$entry"
  unpacked="$work/unpacked/$tarball"
  if [ ! -d "$unpacked" ]; then
    mkdir -p "$unpacked"
    tar -xzf "$work/npm/$tarball" -C "$unpacked"
  fi
  shopt -s nullglob
  matched=("$unpacked"/$path)
  shopt -u nullglob
  [ ${#matched[@]} -gt 0 ] || { echo "$tarball has no $path" >&2; exit 1; }
  if [[ "$destination" == */ ]]; then
    mkdir -p "$work/stage/$destination"
    cp "${matched[@]}" "$work/stage/$destination"
  else
    mkdir -p "$work/stage/$(dirname "$destination")"
    cp "${matched[0]}" "$work/stage/$destination"
  fi
done

if [ "$mode" = fetch ]; then
  (cd "$work/stage" && grep -v '  npm/' "$OLDPWD/$SUMS" | sha256sum --check --quiet --strict)
  # Nothing more than what the sums list (a file gone from a package would leave a stale copy).
  listed=$(grep -vc '  npm/' "$SUMS")
  staged=$(cd "$work/stage" && find . -type f | wc -l)
  [ "$listed" -eq "$staged" ] || { echo "$staged files fetched, $listed in $SUMS" >&2; exit 1; }
fi

rm -rf "$WEB" "$AXE"
cp -r "$work/stage/." .
if [ "$mode" = --update ]; then
  {
    (cd "$work" && find npm -type f | LC_ALL=C sort | xargs sha256sum)
    (cd "$work/stage" && find . -type f | sed 's#^\./##' | LC_ALL=C sort | xargs sha256sum)
  } >"$SUMS"
  echo "wrote $SUMS: review its diff"
else
  echo "vendored web files installed and checked against $SUMS"
fi
