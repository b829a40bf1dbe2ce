#!/usr/bin/env bash
# (m) Peak memory of storing one big mail: `ticketd ingest FILE` (and the
# MTA pipe, `ticketd ingest < FILE`) on mails of 10, 25 and 48 MiB — a text
# body, a base64 attachment, and many small parts — into a fresh SQLite data
# directory. Prints the peak RSS (GNU time) and checks it against the
# target: peak <= 2 x the message + a constant, the constant being the peak
# of a 4 KB mail plus 64 MiB (SQLite's page cache of 32 MiB, the attachment
# and text caps).
#
# Usage: scripts/bench-memory.sh            (builds the release binary)
# Environment: BENCH_MEMORY_SIZES="10 25 48" sizes in MiB
# Exit status: 0 every mail within the target, 3 one was not.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v /usr/bin/time >/dev/null || { echo "bench-memory: needs GNU time (apt-get install time)" >&2; exit 1; }
cargo build --release --quiet
BIN=$PWD/target/release/ticketd
WORK=$(mktemp -d "${TMPDIR:-/tmp}/ticketd-mem.XXXXXX")
trap 'rm -rf "$WORK"' EXIT

# gen KIND MIB FILE: a mail of about MIB MiB.
gen() {
  python3 - "$1" "$2" "$3" <<'PY'
import base64, os, sys
kind, mib, path = sys.argv[1], int(sys.argv[2]), sys.argv[3]
n = mib * 1024 * 1024
head = (b"From: Anna <anna@kunde.example>\r\nTo: support@example.com\r\n"
        b"Subject: big " + kind.encode() + b"\r\nMessage-ID: <" + kind.encode() + str(mib).encode() +
        b"@kunde.example>\r\nDate: Mon, 2 Mar 2026 09:15:00 +0100\r\nMIME-Version: 1.0\r\n")
with open(path, "wb") as f:
    if kind == "text":
        f.write(head + b"Content-Type: text/plain; charset=utf-8\r\n\r\n")
        line = ("Der Server antwortet nicht mehr, bitte um Hilfe. " * 2)[:76].encode() + b"\r\n"
        f.write(line * (n // len(line)))
    elif kind == "attachment":
        f.write(head + b'Content-Type: multipart/mixed; boundary="b"\r\n\r\n--b\r\n'
                b"Content-Type: text/plain\r\n\r\nLog anbei.\r\n--b\r\n"
                b'Content-Type: application/octet-stream; name="dump.bin"\r\n'
                b"Content-Transfer-Encoding: base64\r\n\r\n")
        data = os.urandom(n * 3 // 4 - 4096)
        b = base64.b64encode(data)
        for i in range(0, len(b), 76):
            f.write(b[i:i + 76] + b"\r\n")
        f.write(b"--b--\r\n")
    else:  # parts
        f.write(head + b'Content-Type: multipart/mixed; boundary="b"\r\n\r\n')
        part = (b"--b\r\nContent-Type: text/plain\r\n\r\n" + b"Teil.\r\n" * 100)
        f.write(part * (n // len(part)) + b"--b--\r\n")
PY
}

peak_kb() { # peak RSS in KiB of the command
  /usr/bin/time -f '%M' -o "$WORK/rss" "$@" >/dev/null 2>"$WORK/err" || { cat "$WORK/err" >&2; return 1; }
  cat "$WORK/rss"
}

gen text 0 "$WORK/tiny.eml"
printf 'x%.0s' $(seq 1 4000) >> "$WORK/tiny.eml"
base=$(peak_kb "$BIN" --data-dir "$WORK/d0" ingest "$WORK/tiny.eml")
const=$((base + 64 * 1024))
echo "== (m) peak RSS of one big mail (4 KB mail: $((base / 1024)) MiB; allowed: 2 x size + $((const / 1024)) MiB)"
printf '%-11s %6s %10s %10s %7s  %s\n' kind "MiB" "file" "pipe" "ratio" verdict
fail=0
for mib in ${BENCH_MEMORY_SIZES:-10 25 48}; do
  for kind in text attachment parts; do
    f="$WORK/$kind-$mib.eml"
    gen "$kind" "$mib" "$f"
    size_kb=$(( $(stat -c %s "$f") / 1024 ))
    file_kb=$(peak_kb "$BIN" --data-dir "$WORK/f-$kind-$mib" ingest "$f")
    pipe_kb=$(peak_kb sh -c "exec \"$BIN\" --data-dir \"$WORK/p-$kind-$mib\" ingest --direct < \"$f\"")
    worst=$(( file_kb > pipe_kb ? file_kb : pipe_kb ))
    ratio=$(awk -v w="$worst" -v b="$base" -v s="$size_kb" 'BEGIN { printf "%.2f", (w - b) / s }')
    verdict=ok
    if [ "$worst" -gt $((2 * size_kb + const)) ]; then verdict=OVER; fail=1; fi
    printf '%-11s %6d %8d M %8d M %6sx  %s\n' "$kind" "$mib" $((file_kb / 1024)) $((pipe_kb / 1024)) "$ratio" "$verdict"
    rm -f "$f"
  done
done
echo "(ratio: (peak - the 4 KB mail's peak) / message size)"
[ "$fail" = 0 ] || exit 3
