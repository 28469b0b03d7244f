"""Development-only evaluation in torch (the "development runs with a learned concept token" table): adapters
merged into the weights exactly, their learned tokens appended to the text encoder's table; samples the held-out
concept prompts (4 LCM steps, guidance 2, as pipelines/evaluation/adapters.ts) and base prompts; writes gzip'd RGB + captions per set
for score-torch-eval.ts. Faster to run side by side than pipelines/evaluation/adapters.ts, and needs no node (e.g. on a lent machine).
  T=1 N=32 NB=64 python3 torch_eval.py ADAPTER_DIR OUT_DIR '{"merged": ["diamond", "heart", "ring"], "none": []}'
  npx tsx pipelines/evaluation/score-torch-eval.ts OUT_DIR merged none
"""
import gzip
import json
import os
import sys
import numpy as np, torch
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, '..', '..'))
sys.path.insert(0, os.path.join(HERE, '..'))
torch.set_num_threads(int(os.environ.get('T', '1')))
import lora
from train_adapter import load_base, concept_token_ids, CKPT, PACK
from clip_tokenizer import ClipTokenizer
from train_unet import lcm_sample

d, out = sys.argv[1], sys.argv[2]
sets = json.loads(sys.argv[3])  # {"label": ["diamond", ...]}
n_per = int(os.environ.get('N', '32'))
held = json.load(open(os.path.join(HERE, '..', 'heldout-concepts.json')))
base_items = json.load(open(os.path.join(PACK, 'heldout.json')))[:int(os.environ.get('NB', '0'))]
tok = ClipTokenizer(os.path.join(PACK, 'tokenizer'))
os.makedirs(out, exist_ok=True)
for label, names in sets.items():
    vae, te, unet, sf, _ = load_base(os.path.join(CKPT, 'unet.pt'))
    mods = dict(unet.named_modules())
    table = te.text_model.embeddings.token_embedding.weight.data
    rows, triggers = [], {}
    for name in names:
        t, meta = lora.read_safetensors(os.path.join(d, name + '.safetensors'))
        for k, v in t.items():
            if k.startswith('bundle_emb.'):
                word = k.split('.')[1]
                triggers[word] = table.shape[0] + len(rows)
                rows.append(torch.from_numpy(v.copy()).reshape(-1))
            elif k.endswith('.lora_down.weight'):
                key = k[:-len('.lora_down.weight')]
                up = torch.from_numpy(t[key + '.lora_up.weight'].copy()); down = torch.from_numpy(v.copy())
                alpha = float(np.asarray(t[key + '.alpha']).reshape(-1)[0]); r = down.shape[0]
                path = key[len('lora_unet_'):]
                m = next(m for p, m in mods.items() if p.replace('.', '_') == path)
                m.weight.data += (alpha / r) * up @ down
    if rows:
        emb = torch.nn.Embedding(table.shape[0] + len(rows), table.shape[1])
        emb.weight.data = torch.cat([table, torch.stack(rows)])
        te.text_model.embeddings.token_embedding = emb
    def ids_of(cap):
        ids = torch.tensor([tok(cap)])
        for word, tid in triggers.items():
            pieces = tok(word)[1:]; pieces = pieces[:pieces.index(pieces[-1])]
            row = ids[0].tolist()
            if any(row[k:k + len(pieces)] == pieces for k in range(len(row))):
                ids = concept_token_ids(ids, pieces, tid, tok('')[-1])
        return ids
    items = [h for c in ('diamond', 'heart', 'ring') for h in [x for x in held if x['concept'] == c][:n_per]] + base_items
    ids = torch.cat([ids_of(h['caption']) for h in items])
    imgs = []
    with torch.no_grad():
        for i in range(0, len(items), 32):
            imgs.append(lcm_sample(unet, te, ids[i:i + 32], 4, sf, vae, guidance=2.0, uncond_ids=torch.tensor([tok('')]), seed=1 + i))
    imgs = np.concatenate(imgs)
    gzip.open(os.path.join(out, label + '.rgb.gz'), 'wb').write(imgs.tobytes())
    json.dump([{k: h[k] for k in ('caption', 'attributes')} | {'concept': h.get('concept')} for h in items], open(os.path.join(out, label + '.json'), 'w'))
    print(label, 'sampled', len(items), flush=True)
