"""Run as a script: load an export with plain transformers, this project's packages hidden.

`python -I tests/plain_transformers.py SPEC.json OUT.pt FOLDER [FOLDER ...]` from a scratch folder. The
project is installed editable, so site-packages still maps conf/data/train to it: a finder placed
first on sys.meta_path refuses them. SPEC lists the loads to run; OUT gets, per FOLDER and per load,
the logits of SPEC's ids (or the exception's type and first line), and SPEC's greedy pipeline text.
"""
import importlib.abc
import json
import sys

PROJECT = ("conf", "data", "train", "tests", "bench", "launch")


class HideProject(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in PROJECT:
            raise ModuleNotFoundError(f"{name} is hidden: plain transformers only")
        return None


sys.meta_path.insert(0, HideProject())
sys.path = [p for p in sys.path if p not in ("", ".")]

import torch  # noqa: E402
from transformers import AutoConfig, AutoModelForCausalLM, StaticCache, pipeline  # noqa: E402

spec_path, out_path, *folders = sys.argv[1:]
spec = json.loads(open(spec_path).read())
ids = torch.tensor(spec["ids"])
results = {}
try:
    import train  # noqa: F401
    results["project_importable"] = True
except ModuleNotFoundError:
    results["project_importable"] = False
for folder in folders:
    found = results[folder] = {}
    for name, kwargs in spec["loads"].items():
        try:
            config = AutoConfig.from_pretrained(folder, **kwargs.get("config", {}))
            model = AutoModelForCausalLM.from_pretrained(folder, **kwargs.get("model", {})).eval()
            with torch.no_grad():
                out = {"logits": model(ids).logits, "config_class": type(config).__name__,
                       "attention_module": type(model.model.layers[0].self_attn).__module__}
                if kwargs.get("generate"):  # greedy with and without the KV cache
                    gen = dict(max_new_tokens=8, do_sample=False, pad_token_id=0, attention_mask=torch.ones_like(ids))
                    out["cached"] = model.generate(ids, use_cache=True, **gen)
                    out["uncached"] = model.generate(ids, use_cache=False, **gen)
                    static = StaticCache(config=model.config, max_cache_len=ids.shape[1] + 16)
                    out["static"] = model.generate(ids, past_key_values=static, **gen)
            found[name] = out
        except Exception as error:  # the test reads what failed and how
            found[name] = {"error": type(error).__name__,
                           "message": str(error).splitlines()[0] if str(error) else ""}
    if "prompt" in spec:
        generator = pipeline("text-generation", model=folder, trust_remote_code=True)
        found["pipeline"] = generator(spec["prompt"], max_new_tokens=spec["max_new_tokens"], do_sample=False)[0][
            "generated_text"]
torch.save(results, out_path)
