#!/usr/bin/env bash
# `emcoder serve` as its users meet it (the API, limits, batching, deadlines and the drain are
# tested by cargo: tests/serve/serve.rs and tests/cli/serve_cli.rs):
#   1. the demo page in a real browser (Debian's chromium, headless, every other host
#      blocked): after it predicts two texts, the DOM holds 28 bars per text with the
#      predicted ones marked, and a screenshot is not blank (the bar colours are drawn);
#   2. an unmodified TEI client, huggingface_hub.InferenceClient(base_url=...), classifies
#      through POST /, and its scores equal those of POST /predict.
# CI runs it (.ci/run); so can you:   bash scripts/test-serve.sh
# Needs: python3 with venv, network access to the Python package index; installs chromium
# with apt when it is missing (as root, or with sudo). EMCODER_BIN: the emcoder binary to run
# (default: target/debug/emcoder, built if missing). The screenshot is left in target/serve-test/.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD
OUT=$ROOT/target/serve-test
SECONDS=0
rm -rf "$OUT"
mkdir -p "$OUT"

BIN=${EMCODER_BIN:-$ROOT/target/debug/emcoder}
if [[ ! -x $BIN ]]; then
    cargo build --locked -p emcoder-cli --bin emcoder
    BIN=$ROOT/target/debug/emcoder
fi

if ! command -v chromium >/dev/null; then
    echo "==> installing chromium (apt)"
    SUDO=""
    [[ $(id -u) -eq 0 ]] || SUDO=sudo
    $SUDO apt-get update -qq
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null
fi

echo "==> Python environment (huggingface_hub, pillow)"
python3 -m venv "$OUT/venv"
"$OUT/venv/bin/python" -m pip -q --disable-pip-version-check install "huggingface_hub>=0.24" "pillow>=10"

echo "==> emcoder serve (the shipped model)"
"$BIN" serve --port 0 2>"$OUT/serve.log" &
SERVER=$!
trap 'kill $SERVER 2>/dev/null || true' EXIT
for _ in $(seq 1 300); do
    grep -q "listening on http://" "$OUT/serve.log" && break
    kill -0 $SERVER 2>/dev/null || { cat "$OUT/serve.log"; echo "emcoder serve exited" >&2; exit 1; }
    sleep 0.1
done
URL=$(grep -o "http://[0-9.:]*" "$OUT/serve.log" | head -n1)
[[ -n $URL ]] || { cat "$OUT/serve.log"; echo "emcoder serve did not start" >&2; exit 1; }
echo "serving at $URL"

echo "==> the page in headless chromium"
page="$URL/?text=I%20am%20so%20happy%20you%20are%20here!&text=This%20is%20the%20worst%20day%20ever."
chrome=(chromium --headless --no-sandbox --disable-gpu --disable-quic --no-first-run
    --disable-background-networking --disable-component-update --disable-sync
    --user-data-dir="$OUT/chromium-profile" --hide-scrollbars
    --host-resolver-rules="MAP * ~NOTFOUND, EXCLUDE 127.0.0.1"
    --virtual-time-budget=20000)
"${chrome[@]}" --dump-dom "$page" >"$OUT/page.html" 2>"$OUT/chromium.log" || {
    cat "$OUT/chromium.log"; echo "chromium failed" >&2; exit 1; }
"${chrome[@]}" --window-size=1100,1500 --screenshot="$OUT/page.png" "$page" >>"$OUT/chromium.log" 2>&1 || {
    cat "$OUT/chromium.log"; echo "chromium failed to take the screenshot" >&2; exit 1; }

"$OUT/venv/bin/python" - "$OUT" "$URL" <<'EOF'
import json, re, sys, urllib.request
from PIL import Image
out, url = sys.argv[1], sys.argv[2]
dom = open(f"{out}/page.html", encoding="utf-8").read()
state = re.search(r'<body[^>]*data-state="(\w+)"', dom)
errors = re.findall(r'<div id="error"[^>]*>(.*?)</div>', dom)
assert state and state.group(1) == "done", f"the page did not finish predicting: {state and state.group(1)}; error: {errors}"
rows = re.findall(r'<div class="row( predicted)?" data-label="(\w+)"', dom)
assert len(rows) == 56, f"{len(rows)} label rows, expected 28 per text"
marked = [l for p, l in rows if p]
assert marked, "no predicted label marked"
assert len(re.findall(r'class="whisker"', dom)) == 56, "a whisker per bar"
assert "samples drawn" in dom
# The first text's top label is the API's.
api = json.load(urllib.request.urlopen(urllib.request.Request(
    f"{url}/v1/predict", data=json.dumps({"inputs": ["I am so happy you are here!"], "samples": 50, "seed": 42, "truncate": True}).encode(),
    headers={"content-type": "application/json"})))
top = max(api["results"][0]["labels"], key=lambda l: l["mean"])["label"]
assert rows[0][1] == top, f"the page's first bar is {rows[0][1]}, the API's top label {top}"
img = Image.open(f"{out}/page.png").convert("RGB")
w, h = img.size
px = list(img.get_flattened_data() if hasattr(img, "get_flattened_data") else img.getdata())
bg = max(set(px), key=px.count)
share = sum(p != bg for p in px) / len(px)
colours = {p for p in px}
def near(c, target, tol=40):
    return all(abs(a - b) <= tol for a, b in zip(c, target))
blue = sum(near(p, (0x3b, 0x6f, 0xd8)) for p in px)
red = sum(near(p, (0xd2, 0x45, 0x2f)) for p in px)
print(f"page: {len(rows)} bars, predicted marked: {', '.join(marked)}; screenshot {w}x{h}, "
      f"{share:.1%} non-background pixels, {len(colours)} colours, bar pixels: blue {blue}, red {red}")
assert share > 0.05 and len(colours) > 50, "the screenshot is blank"
assert blue > 500 and red > 100, "the bars are not drawn"
EOF

echo "==> huggingface_hub.InferenceClient against POST /"
"$OUT/venv/bin/python" - "$URL" <<'EOF'
import json, sys, urllib.request
from huggingface_hub import InferenceClient
url = sys.argv[1]
client = InferenceClient(base_url=url)
text = "Thank you so much, this made my day!"
got = client.text_classification(text)
tei = json.load(urllib.request.urlopen(urllib.request.Request(
    f"{url}/predict", data=json.dumps({"inputs": text}).encode(), headers={"content-type": "application/json"})))
assert len(got) == 28, f"{len(got)} labels"
assert [(e.label, e.score) for e in got] == [(e["label"], e["score"]) for e in tei], "InferenceClient and /predict differ"
assert got[0].label == "gratitude", f"top label {got[0].label}"
top3 = client.text_classification(text, top_k=3)
assert [e.label for e in top3] == [e.label for e in got[:3]]
print(f"InferenceClient: {got[0].label} {got[0].score:.3f}, {got[1].label} {got[1].score:.3f}; top_k=3 ok")
EOF

kill -TERM $SERVER
wait $SERVER
trap - EXIT
echo "==> serve: done in $((SECONDS / 60))m$((SECONDS % 60))s"
