"""Tiny models built locally from configs (never downloaded) and the naive float64 oracle."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

VOCAB = 96


def llama(seed: int, hidden: int = 16, layers: int = 1, vocab: int = VOCAB, bias: bool = False):
    torch.manual_seed(seed)
    config = transformers.LlamaConfig(vocab_size=vocab, hidden_size=hidden, intermediate_size=2 * hidden,
                                      num_hidden_layers=layers, num_attention_heads=2, num_key_value_heads=1,
                                      max_position_embeddings=64, tie_word_embeddings=False)
    model = transformers.LlamaForCausalLM(config)
    if bias:  # an LM head with a bias, as some models have: the fused path must include it
        head = model.lm_head
        model.lm_head = torch.nn.Linear(head.in_features, head.out_features, bias=True)
        model.lm_head.weight.data.copy_(head.weight.data)
        torch.nn.init.normal_(model.lm_head.bias, std=0.5)
    return model


def gemma2(seed: int, cap: float = 3.0, hidden: int = 16, vocab: int = VOCAB):
    torch.manual_seed(seed)
    config = transformers.Gemma2Config(vocab_size=vocab, hidden_size=hidden, intermediate_size=2 * hidden,
                                       num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1, head_dim=8,
                                       final_logit_softcapping=cap, max_position_embeddings=64)
    model = transformers.Gemma2ForCausalLM(config)
    with torch.no_grad():  # logits large enough for the cap to matter
        model.get_output_embeddings().weight.mul_(40.0)
    return model


def batch(seed: int, n: int = 3, length: int = 9, vocab: int = VOCAB, masked: float = 0.3):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, vocab, (n, length), generator=g)
    labels = ids.clone()
    labels[torch.rand((n, length), generator=g) < masked] = -100
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels}


def naive_loss(student_logits, teacher_logits, labels, divergence="kl", temperature=1.0, beta=0.5, squared=False,
               hard=0.0, vocab=None, num_items=None):
    """The distillation loss on materialised, shifted logits in float64, written from the definitions."""
    s = student_logits[:, :-1].double()
    t = teacher_logits[:, :-1].double()
    y = labels[:, 1:]
    if vocab is not None:
        s, t = s[..., :vocab], t[..., :vocab]
    keep = y != -100
    s, t, y = s[keep], t[keep], y[keep]
    ls, lt = torch.log_softmax(s / temperature, -1), torch.log_softmax(t / temperature, -1)
    ps, pt = ls.exp(), lt.exp()
    if divergence == "kl":
        d = (pt * (lt - ls)).sum(-1)
    elif divergence == "reverse_kl":
        d = (ps * (ls - lt)).sum(-1)
    else:  # generalized JSD, mixture beta T + (1 - beta) S
        lm = torch.log(beta * pt + (1 - beta) * ps)
        d = beta * (pt * (lt - lm)).sum(-1) + (1 - beta) * (ps * (ls - lm)).sum(-1)
    if squared:
        d = d * temperature**2
    ce = -torch.log_softmax(s, -1).gather(-1, y[:, None]).squeeze(-1)
    total = (d + hard * ce).sum()
    return total / (num_items if num_items is not None else keep.sum())


def args(tmp_path, **kwargs):
    defaults = dict(output_dir=str(tmp_path / "out"), report_to=[], use_cpu=True, per_device_train_batch_size=2,
                    learning_rate=1e-2, max_steps=3, logging_steps=1, save_strategy="no", disable_tqdm=True,
                    dataloader_num_workers=0, seed=0)
    defaults.update(kwargs)
    return transformers.TrainingArguments(**defaults)


class ListDataset(torch.utils.data.Dataset):
    def __init__(self, items):
        self.items = items

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        return self.items[i]


def examples(seed: int, n: int = 8, length: int = 9, vocab: int = VOCAB, masked: float = 0.3):
    b = batch(seed, n, length, vocab, masked)
    return ListDataset([{key: value[i] for key, value in b.items()} for i in range(n)])
