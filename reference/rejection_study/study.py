"""Does a larger model of EmCoder's architecture give a rising macro-F1 rejection curve?

A developer study for issue 4 (the shipped EmCoder-mini's macro F1 falls when its most
uncertain decisions are rejected). It trains models of the reference architecture
(`emcoder_ref.model`) with EmCoder-mini's recipe (weighted BCE, AdamW 1e-3 with warm-up and
cosine decay, batch 32, torch dropout) on a GPU when there is one, and after every epoch
evaluates MC N=50 (torch RNG) on dev and test: thresholds per label on dev from
linspace(0.1, 0.9, 15), then on test the macro F1 after rejecting 0..90% of the decisions
under several definitions:
  D0 (pairs by epistemic value = mutual information, the `emcoder eval` definition),
  D1 (D0, macro over the labels that keep a TP, FP or FN), D2 (within each label),
  D3 (whole texts by mean epistemic value), D4 (pairs by std), and micro F1 under D0.

  # tokenize once (needs the `tokenizers` package; the GPU machine may not have it)
  reference/.venv/bin/python reference/rejection_study/study.py prepare /tmp/rej-data.pkl
  # train and evaluate (ONLY=d512L6,d256L4 EPOCHS=8 BUDGET=seconds OUT=dir)
  OUT=/tmp/rej python3 reference/rejection_study/study.py run /tmp/rej-data.pkl

Results of a run on one H200 (2026-11-26): `d512L6-h200.json` in this folder.
"""
import sys, os, json, math, time, pickle
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import numpy as np, torch, torch.nn.functional as F
from emcoder_ref.model import EmCoder, EmCoderConfig, pad_batch

OUT = os.environ.get("OUT", "/tmp/rejection-study")
os.makedirs(OUT, exist_ok=True)
BUDGET = float(os.environ.get("BUDGET", "400"))
T0 = time.time()
dev = "cuda" if torch.cuda.is_available() else "cpu"
LIMIT = int(os.environ.get("LIMIT", "0"))
log = open(os.path.join(OUT, "log.txt"), "a")
def say(*a):
    s = f"[{time.time()-T0:6.1f}s] " + " ".join(str(x) for x in a)
    print(s, flush=True); log.write(s + "\n"); log.flush()

def prf(tp, fp, fn):
    tp, fp, fn = (np.asarray(a, dtype=np.float64) for a in (tp, fp, fn))
    return np.where(2*tp+fp+fn > 0, 2*tp/np.maximum(2*tp+fp+fn, 1), 0.0)

def f1s(y, pred, keep):
    tp = (y & pred & keep).sum(0); fp = (~y & pred & keep).sum(0); fn = (y & ~pred & keep).sum(0)
    f = prf(tp, fp, fn); nonempty = (2*tp+fp+fn) > 0
    return f.mean(), (f[nonempty].mean() if nonempty.any() else 0.0), prf(tp.sum(), fp.sum(), fn.sum())

def curves(y, pred, mi, std):
    y = y.astype(bool); n, C = y.shape; P = n*C
    res = {k: [] for k in ("D0_global_mi", "D1_global_mi_nonempty", "D2_per_label_mi", "D3_text_mean_mi", "D4_global_std", "micro_global_mi")}
    rank_mi = np.argsort(-mi.reshape(P), kind="stable")
    rank_sd = np.argsort(-std.reshape(P), kind="stable")
    rank_lab = np.argsort(-mi, axis=0, kind="stable")
    rank_txt = np.argsort(-mi.mean(1), kind="stable")
    for k in range(10):
        keep = np.ones(P, bool); keep[rank_mi[:(k*P)//10]] = False; keep = keep.reshape(n, C)
        a, b, m = f1s(y, pred, keep); res["D0_global_mi"].append(round(float(a), 4)); res["D1_global_mi_nonempty"].append(round(float(b), 4)); res["micro_global_mi"].append(round(float(m), 4))
        keep = np.ones(P, bool); keep[rank_sd[:(k*P)//10]] = False
        res["D4_global_std"].append(round(float(f1s(y, pred, keep.reshape(n, C))[0]), 4))
        keep = np.ones((n, C), bool)
        for c in range(C): keep[rank_lab[:(k*n)//10, c], c] = False
        res["D2_per_label_mi"].append(round(float(f1s(y, pred, keep)[0]), 4))
        keep = np.ones((n, C), bool); keep[rank_txt[:(k*n)//10]] = False
        res["D3_text_mean_mi"].append(round(float(f1s(y, pred, keep)[0]), 4))
    return res

def H(p):
    p = np.clip(p, 1e-12, 1-1e-12); return -(p*np.log(p)+(1-p)*np.log(1-p))

@torch.no_grad()
def mc(model, seqs, N=50, tb=128):
    model.eval(); n = len(seqs); C = 28
    mean = np.zeros((n, C)); std = np.zeros((n, C)); mi = np.zeros((n, C)); det = np.zeros((n, C))
    order = np.argsort([len(s) for s in seqs], kind="stable")
    for i in range(0, n, tb):
        sel = order[i:i+tb]; ids, am = pad_batch([seqs[j] for j in sel]); ids, am = ids.to(dev), am.to(dev)
        det[sel] = torch.sigmoid(model(ids, am, mode="off")).double().cpu().numpy()
        b = len(sel)
        p = torch.sigmoid(model(ids.repeat(N, 1), am.repeat(N, 1), mode="torch")).double().cpu().numpy().reshape(N, b, C)
        m = p.mean(0); mean[sel] = m; std[sel] = p.std(0); mi[sel] = H(m) - H(p).mean(0)
    return mean, std, mi, det

def best_thr(y, mean):
    grid = np.linspace(0.1, 0.9, 15); y = y.astype(bool); thr = np.zeros(28)
    for c in range(28):
        f = [prf((y[:, c] & (mean[:, c] >= t)).sum(), (~y[:, c] & (mean[:, c] >= t)).sum(), (y[:, c] & ~(mean[:, c] >= t)).sum()) for t in grid]
        thr[c] = grid[int(np.argmax(f))]
    return thr

def macro(y, pred):
    y = y.astype(bool); return float(f1s(y, pred, np.ones_like(y))[0])

def run(name, d, L, H_, ffn, epochs=8, lr=1e-3, posw=True, seed=20240601, batch=32):
    torch.manual_seed(seed); rng = np.random.default_rng(seed)
    tr, ytr = D["train"]; dv, ydv = D["dev"]; te, yte = D["test"]
    cfg = EmCoderConfig(d_model=d, n_head=H_, n_layers=L, d_ffn=ffn, dropout=0.1)
    model = EmCoder(cfg); torch.nn.init.normal_(model.encoder.token_embedding.weight, std=0.02); model.to(dev)
    n_pos = ytr.sum(0); n_neg = len(ytr) - n_pos
    pw = torch.tensor(np.clip(1 + np.log((n_neg+1e-6)/(n_pos+1e-6)), 0.1, 20), dtype=torch.float32, device=dev) if posw else None
    model.encoder.token_embedding.sparse = True
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad and "token_embedding" not in n]
    dense = [p for _, p in named]
    opt = torch.optim.AdamW([{"params": [p for _, p in named if p.dim() == 2], "weight_decay": 0.01}, {"params": [p for _, p in named if p.dim() < 2], "weight_decay": 0.0}], lr=lr)
    opt_e = torch.optim.SparseAdam([model.encoder.token_embedding.weight], lr=lr)
    lens = np.array([len(s) for s in tr]); spe = math.ceil(len(tr)/batch); total = spe*epochs; warm = max(1, int(0.06*total))
    lr_at = lambda s: lr*(s+1)/warm if s < warm else lr*0.5*(1+math.cos(math.pi*(s-warm)/max(1, total-warm)))
    step = 0; result = {"name": name, "d": d, "L": L, "H": H_, "ffn": ffn, "posw": posw, "epochs": []}
    for ep in range(1, epochs+1):
        if time.time() - T0 > BUDGET: say(name, "budget reached"); break
        model.train(); idx = rng.permutation(len(tr)); bs = []
        for i in range(0, len(idx), batch*50):
            ch = idx[i:i+batch*50]; ch = ch[np.argsort(lens[ch], kind="stable")]; bs += [ch[j:j+batch] for j in range(0, len(ch), batch)]
        rng.shuffle(bs); tl = 0.0
        for sel in bs:
            ids, am = pad_batch([tr[j] for j in sel]); ids, am = ids.to(dev), am.to(dev)
            y = torch.from_numpy(ytr[sel]).to(dev)
            for g in opt.param_groups + opt_e.param_groups: g["lr"] = lr_at(step)
            loss = F.binary_cross_entropy_with_logits(model(ids, am, mode="torch"), y, pos_weight=pw)
            opt.zero_grad(set_to_none=True); opt_e.zero_grad(set_to_none=True); loss.backward()
            torch.nn.utils.clip_grad_norm_(dense, 1.0); opt.step(); opt_e.step(); step += 1; tl += loss.item()
        mdv, sdv, midv, ddv = mc(model, dv); thr = best_thr(ydv, mdv)
        mte, ste, mite, dte = mc(model, te); pred = mte >= thr
        e = {"epoch": ep, "loss": tl/len(bs), "dev_det_f1_05": macro(ydv, ddv >= 0.5), "dev_mc_thr_f1": macro(ydv, mdv >= thr),
             "test_mc_thr_f1": macro(yte, pred), "test_curves": curves(yte, pred, mite, ste),
             "dev_curves": curves(ydv, mdv >= thr, midv, sdv)}
        result["epochs"].append(e)
        c = e["test_curves"]
        say(name, "ep", ep, "loss %.4f devdet %.4f test %.4f" % (e["loss"], e["dev_det_f1_05"], e["test_mc_thr_f1"]), "D0", c["D0_global_mi"][::2], "D1", c["D1_global_mi_nonempty"][::2], "D2", c["D2_per_label_mi"][::2], "D3", c["D3_text_mean_mi"][::2])
        json.dump(result, open(os.path.join(OUT, f"{name}.json"), "w"))
        if d <= 256 and c["D0_global_mi"][5] > c["D0_global_mi"][0]:
            torch.save({k: v.half().cpu() for k, v in model.state_dict().items()}, os.path.join(OUT, f"{name}_ep{ep}.pt"))
    return result

def prepare(path):
    from emcoder_ref.data import REPO, read_tsv, load_tokenizer, encode
    tok = load_tokenizer()
    d = {}
    for name, p in [("train", os.path.join(REPO, "..", "shared", "data", "goemotions", "train.tsv")),
                    ("dev", os.path.join(REPO, "data", "goemotions", "dev.tsv")),
                    ("test", os.path.join(REPO, "data", "goemotions", "test.tsv"))]:
        t, y, _ = read_tsv(p)
        d[name] = (encode(tok, t), y)
    pickle.dump(d, open(path, "wb"))
    print({k: len(v[0]) for k, v in d.items()})


if len(sys.argv) != 3 or sys.argv[1] not in ("prepare", "run"):
    sys.exit("usage: study.py prepare DATA.pkl | study.py run DATA.pkl")
if sys.argv[1] == "prepare":
    prepare(sys.argv[2])
    sys.exit(0)
D = pickle.load(open(sys.argv[2], "rb"))
if LIMIT:
    D = {k: (v[0][:LIMIT], v[1][:LIMIT]) for k, v in D.items()}
say("device", dev, torch.__version__, torch.cuda.get_device_name(0) if dev == "cuda" else "")
variants = [("d512L6", 512, 6, 8, 1376, {}), ("d256L4_noposw", 256, 4, 4, 688, {"posw": False}),
            ("d768L6", 768, 6, 12, 2048, {}), ("d256L4", 256, 4, 4, 688, {})]
only = os.environ.get("ONLY")
for name, d, L, H_, ffn, kw in variants:
    if only and name not in only.split(","): continue
    if time.time() - T0 > BUDGET: break
    run(name, d, L, H_, ffn, epochs=int(os.environ.get("EPOCHS", "8")), **kw)
say("done")
