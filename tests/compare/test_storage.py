"""Stored reference logits: every format round-trips, and damaged files name the file and byte offset."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest
from compare_reference import rechecksum, se  # noqa: E402,I001

from kldiv.compare import FORMATS, Comparison, CorruptFileError, compare_files, save_reference


def logits(seed=0, shape=(3, 10, 50), noise=0.3):
    rng = np.random.default_rng(seed)
    a = (3 * rng.normal(size=shape)).astype(np.float32)
    return a, (a + noise * rng.normal(size=shape)).astype(np.float32), rng.integers(0, shape[-1], shape[:-1])


def in_memory(a, b, y=None):
    c = Comparison()
    c.update(a, b, y)
    return c.result()


@pytest.mark.parametrize("fmt, tolerance", [("float32", 1e-12), ("float16", 1e-3), ("quantized", 1e-4)])
def test_each_format_reproduces_the_in_memory_report_within_its_error(tmp_path, fmt, tolerance):
    a, b, y = logits()
    save_reference(tmp_path / "ref", a[:2], labels=y[:2], format=fmt)
    save_reference(tmp_path / "ref", a[2:], labels=y[2:], format=fmt)
    np.save(tmp_path / "other.npy", b)
    r, expected = compare_files(tmp_path / "ref", tmp_path / "other.npy"), in_memory(a, b, y)
    assert r.n_tokens == 30 and r.reference_format == fmt
    assert r.kld_mean == pytest.approx(expected.kld_mean, rel=tolerance, abs=tolerance)
    assert r.ppl_ratio == pytest.approx(expected.ppl_ratio, rel=tolerance)
    np.testing.assert_array_equal(r.tokens_by_position, [3] * 10)
    assert 0 <= (r.reference_self_kld or 0) + 1e-7 and (r.reference_self_kld or 0) < tolerance


def test_top_k_format_records_its_error_and_keeps_the_top_k_exact(tmp_path):
    a, b, y = logits(shape=(40, 50))
    path = save_reference(tmp_path / "ref.safetensors", a, format="top_k", top_k=10)
    self = compare_files(path, path)
    assert abs(self.kld_mean) < 1e-6 and self.same_top_p == 1 and self.top_k_overlap[10] == 1
    # the recorded error is KL(exact ‖ stored): the reverse comparison of the stored file with the exact logits
    r = compare_files(path, _save_npy(tmp_path / "a.npy", a), reverse=True)
    assert r.reference_self_kld > 0 and r.kld_mean == pytest.approx(r.reference_self_kld, rel=1e-5)


def _save_npy(path, array):
    np.save(path, array)
    return path


def test_files_are_readable_by_the_safetensors_package(tmp_path):
    safetensors_numpy = pytest.importorskip("safetensors.numpy")
    a, _, y = logits()
    for fmt in FORMATS:
        tensors = safetensors_numpy.load_file(save_reference(tmp_path / f"{fmt}.safetensors", a, labels=y, format=fmt))
        assert tensors["labels"].tolist() == y.tolist()
    np.testing.assert_array_equal(safetensors_numpy.load_file(tmp_path / "float32.safetensors")["logits"], a)


def test_sides_split_into_files_differently_are_paired_token_by_token(tmp_path):
    a, b, y = logits(shape=(30, 40))
    for lo in range(0, 30, 7):
        save_reference(tmp_path / "ref", a[lo:lo + 7])
    for lo in range(0, 30, 11):
        np.save(tmp_path / "other" / f"part-{lo:03d}.npy", b[lo:lo + 11]) if (tmp_path / "other").exists() else (
            (tmp_path / "other").mkdir(), np.save(tmp_path / "other" / f"part-{lo:03d}.npy", b[lo:lo + 11]))
    r = compare_files(tmp_path / "ref", tmp_path / "other", labels=y)
    expected = in_memory(a, b, y)
    assert r.kld_mean == pytest.approx(expected.kld_mean, rel=1e-12)
    assert r.ppl_ratio == pytest.approx(expected.ppl_ratio, rel=1e-12)


def write_llama_file(path, rows, tokens, n_ctx, n_chunk):
    """llama.cpp's --kl-divergence-base layout, written from its description (perplexity.cpp)."""
    v = rows.shape[-1]
    words = 2 * ((v + 1) // 2) + 4
    with open(path, "wb") as f:
        f.write(b"_logits_" + struct.pack("<iii", n_ctx, v, n_chunk))
        f.write(np.asarray(tokens, "<i4").tobytes())
        for x in rows.astype(np.float32):
            top, low = x.max(), max(x.min(), x.max() - 16)
            lse = np.log(np.exp((x - top).astype(np.float64)).sum())
            scale = np.float32((top - low) / 65535)
            record = np.zeros(words, "<u2")
            record[:4] = np.array([scale, low - top - lse], "<f4").view("<u2")
            record[4:4 + v] = np.where(x > low, np.rint((x - low) / scale), 0)
            f.write(record.tobytes())


def llama_case(tmp_path, n_ctx, n_chunk, v, spread, noise, seed):
    """A llama.cpp base file of logits ~ N(0, spread^2) beside an .npy of the other model's (reference + noise),
    compared: (result, reference logits, other logits, the file's scored tokens)."""
    scored = n_ctx - 1 - n_ctx // 2
    rng = np.random.default_rng(seed)
    tokens = rng.integers(0, v, (n_chunk, n_ctx))
    a = (spread * rng.normal(size=(n_chunk * scored, v))).astype(np.float32)
    b = (a + noise * rng.normal(size=a.shape)).astype(np.float32)
    write_llama_file(tmp_path / "base.kld", a, tokens, n_ctx, n_chunk)
    np.save(tmp_path / "other.npy", b)
    r = compare_files(tmp_path / "base.kld", tmp_path / "other.npy")
    return r, a, b, tokens[:, n_ctx // 2 + 1:].reshape(-1)


def test_llama_cpp_base_files_are_read_with_their_tokens_as_labels(tmp_path):
    n_ctx, n_chunk, v = 8, 3, 30
    scored = n_ctx - 1 - n_ctx // 2
    r, a, b, labels = llama_case(tmp_path, n_ctx, n_chunk, v, spread=3, noise=0.3, seed=2)
    expected = in_memory(a, b, labels)
    assert r.reference_format == "llama.cpp" and r.n_labelled == n_chunk * scored
    assert r.kld_mean == pytest.approx(expected.kld_mean, rel=1e-3)
    assert r.ppl_reference == pytest.approx(expected.ppl_reference, rel=1e-3)
    assert np.isnan(r.kld_by_position[:n_ctx // 2]).all() and (r.tokens_by_position[n_ctx // 2:] == n_chunk).all()


def test_truncated_llama_file_names_the_file_and_the_cut_record(tmp_path):
    rng = np.random.default_rng(0)
    write_llama_file(tmp_path / "base.kld", rng.normal(size=(6, 30)), rng.integers(0, 30, (2, 8)), 8, 2)
    data = (tmp_path / "base.kld").read_bytes()
    (tmp_path / "cut.kld").write_bytes(data[:-10])
    with pytest.raises(CorruptFileError, match=r"cut.kld: byte offset 424: .*chunk 1, position 6 is cut off: the file is truncated"):
        compare_files(tmp_path / "cut.kld", tmp_path / "cut.kld")
    (tmp_path / "bad.kld").write_bytes(data[:12] + struct.pack("<i", -5) + data[16:])
    with pytest.raises(CorruptFileError, match=r"bad.kld: byte offset 12: n_vocab = -5 is not a plausible size"):
        compare_files(tmp_path / "bad.kld", tmp_path / "bad.kld")
    broken = bytearray(data)
    broken[84:88] = np.array([np.nan], "<f4").tobytes()  # the first record's scale
    (tmp_path / "nan.kld").write_bytes(bytes(broken))
    with pytest.raises(CorruptFileError, match=r"nan.kld: byte offset 84: token 0 has scale nan"):
        compare_files(tmp_path / "nan.kld", tmp_path / "nan.kld")


def test_truncated_safetensors_and_npy_name_the_file_and_offset(tmp_path):
    a, _, _ = logits()
    path = save_reference(tmp_path / "ref.safetensors", a)
    data = path.read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(data[:-100])
    with pytest.raises(CorruptFileError, match=rf"cut.safetensors: byte offset {len(data) - 100}: the file ends at byte "
                                               rf"{len(data) - 100} but tensor 'logits' needs bytes"):
        compare_files(tmp_path / "cut.safetensors", path)
    (tmp_path / "short.safetensors").write_bytes(data[:5])
    with pytest.raises(CorruptFileError, match="short.safetensors: byte offset 5: the file has only 5 bytes"):
        compare_files(tmp_path / "short.safetensors", path)
    np.save(tmp_path / "a.npy", a)
    (tmp_path / "cut.npy").write_bytes((tmp_path / "a.npy").read_bytes()[:1000])
    with pytest.raises(CorruptFileError, match=r"cut.npy: byte offset 1000: the file ends at byte 1000 .* truncated"):
        compare_files(path, tmp_path / "cut.npy")


def tensor_offset(data, name):
    (length,) = struct.unpack("<Q", data[:8])
    return 8 + length + json.loads(data[8:8 + length])[name]["data_offsets"][0]


def test_corrupt_header_and_nan_data_name_the_file_and_offset(tmp_path):
    a, _, _ = logits()
    path = save_reference(tmp_path / "ref.safetensors", a)
    data = bytearray(path.read_bytes())
    (length,) = struct.unpack("<Q", data[:8])
    bad_json = data[:8] + b"{" * length + data[8 + length:]
    (tmp_path / "json.safetensors").write_bytes(bytes(bad_json))
    with pytest.raises(CorruptFileError, match="json.safetensors: byte offset 8: the header is not valid JSON"):
        compare_files(tmp_path / "json.safetensors", path)
    start = tensor_offset(data, "logits") + 4 * (2 * 50 + 7)  # token 2, logit 7
    data[start:start + 4] = np.array([np.nan], "<f4").tobytes()
    (tmp_path / "nan.safetensors").write_bytes(bytes(data))
    with pytest.raises(CorruptFileError, match="nan.safetensors: its bytes do not match the SHA-256"):
        compare_files(tmp_path / "nan.safetensors", path)
    rechecksum(tmp_path / "nan.safetensors")  # behind the checksum, the data check names the offset
    with pytest.raises(CorruptFileError, match=rf"nan.safetensors: byte offset {start}: logit \[2, 7\] is NaN"):
        compare_files(tmp_path / "nan.safetensors", path)


def test_corrupt_top_k_ids_name_the_offset(tmp_path):
    a, _, _ = logits(shape=(5, 20))
    path = save_reference(tmp_path / "ref.safetensors", a, format="top_k", top_k=4)
    data = bytearray(path.read_bytes())
    offset = tensor_offset(data, "indices") + 4 * (4 * 3 + 1)
    data[offset:offset + 4] = struct.pack("<i", 999)
    (tmp_path / "bad.safetensors").write_bytes(bytes(data))
    rechecksum(tmp_path / "bad.safetensors")
    with pytest.raises(CorruptFileError, match=rf"bad.safetensors: byte offset {offset}: token id 999 of token 3"):
        compare_files(tmp_path / "bad.safetensors", path)


def test_different_token_counts_and_vocabularies_are_refused(tmp_path):
    a, b, _ = logits(shape=(10, 20))
    save_reference(tmp_path / "a.safetensors", a)
    np.save(tmp_path / "short.npy", b[:9])
    np.save(tmp_path / "wide.npy", np.concatenate([b, b], -1))
    with pytest.raises(ValueError, match="holds 10 tokens but .*short.npy holds 9"):
        compare_files(tmp_path / "a.safetensors", tmp_path / "short.npy")
    with pytest.raises(ValueError, match="has a vocabulary of 20 but .*wide.npy has 40; pass --vocab-size 20"):
        compare_files(tmp_path / "a.safetensors", tmp_path / "wide.npy")
    r = compare_files(tmp_path / "a.safetensors", tmp_path / "wide.npy", vocab_size=20)
    assert r.kld_mean == pytest.approx(in_memory(a, b).kld_mean, rel=1e-12)


def test_save_reference_rejects_bad_arguments(tmp_path):
    a, _, y = logits()
    with pytest.raises(ValueError, match="format must be one of float32, float16, top_k, quantized"):
        save_reference(tmp_path / "x", a, format="int4")
    with pytest.raises(ValueError, match=r"top_k must be an integer in \[1, 50\]"):
        save_reference(tmp_path / "x", a, format="top_k", top_k=51)
    with pytest.raises(ValueError, match="labels must be integers of shape"):
        save_reference(tmp_path / "x", a, labels=y[0])


def llama_cpp_statistics(path, other, labels, n_ctx, n_chunk):
    """llama.cpp's own arithmetic on its file (``log_softmax`` with ``base_log_prob`` in ``tools/perplexity``),
    written from its source: stored log p = scale * code + min_log_prob in float32, KL terms with log p <= -16
    skipped and nothing renormalised, NLL(base) and p(base) from the stored log p(label), the arg max by the
    first maximum; float64 elsewhere (llama.cpp accumulates in double)."""
    v = other.shape[-1]
    words = 2 * ((v + 1) // 2) + 4
    data = np.fromfile(path, dtype="<u2", offset=20 + 4 * n_ctx * n_chunk).reshape(-1, words)
    head = data[:, :4].copy().view("<f4")
    log_p = head[:, :1] * data[:, 4:4 + v].astype(np.float32) + head[:, 1:2]
    x = other.astype(np.float64)
    log_q = x - x.max(-1, keepdims=True)
    log_q -= np.log(np.exp(log_q).sum(-1, keepdims=True))
    lp = log_p.astype(np.float64)
    kld = np.where(log_p > -16, np.exp(lp) * (lp - log_q), 0.0).sum(-1)
    rows = np.arange(len(labels))
    nll, nll_base = -log_q[rows, labels], -lp[rows, labels]
    delta_p = np.exp(-nll) - np.exp(-nll_base)
    return {"kld": kld, "nll": nll, "nll_base": nll_base, "delta_p": delta_p,
            "same_top": (other.argmax(-1) == log_p.argmax(-1)).astype(float)}, log_p


def test_llama_cpp_files_give_llama_cpps_arithmetic_to_1e6(tmp_path):
    # the case: logits ~ N(0, 5^2) over 32,000 tokens, most of them below max - 16
    n_ctx, n_chunk = 8, 4
    r, a, b, labels = llama_case(tmp_path, n_ctx, n_chunk, 32000, spread=5, noise=0.05, seed=3)
    exact = in_memory(a.astype(np.float64), b.astype(np.float64)).kld_mean
    llama, _ = llama_cpp_statistics(tmp_path / "base.kld", b, labels, n_ctx, n_chunk)
    assert llama["kld"].mean() == pytest.approx(exact, rel=0.02)  # llama.cpp's figure is near the exact one
    assert r.kld_mean == pytest.approx(llama["kld"].mean(), rel=1e-6)
    assert r.kld_se == pytest.approx(se(llama["kld"]), rel=1e-6)
    for q, value in r.kld_percentiles.items():
        assert value == pytest.approx(np.percentile(llama["kld"], q), rel=1e-6)
    assert r.ppl_reference == pytest.approx(np.exp(llama["nll_base"].mean()), rel=1e-6)
    assert r.ppl_other == pytest.approx(np.exp(llama["nll"].mean()), rel=1e-6)
    assert r.ln_ppl_ratio == pytest.approx((llama["nll"] - llama["nll_base"]).mean(), rel=1e-6)
    assert r.delta_p_mean == pytest.approx(llama["delta_p"].mean(), rel=1e-6)
    assert r.rms_delta_p == pytest.approx(np.sqrt((llama["delta_p"] ** 2).mean()), rel=1e-6)
    assert r.same_top_p == llama["same_top"].mean()
    assert any("llama.cpp" in note for note in r.notes)


def test_llama_cpp_arithmetic_holds_for_far_apart_models_and_reverse_reads_the_floor(tmp_path):
    n_ctx, n_chunk, v = 10, 3, 2000
    r, a, b, labels = llama_case(tmp_path, n_ctx, n_chunk, v, spread=4, noise=2.0, seed=8)
    llama, log_p = llama_cpp_statistics(tmp_path / "base.kld", b, labels, n_ctx, n_chunk)
    assert r.kld_mean == pytest.approx(llama["kld"].mean(), rel=1e-6)
    assert r.ppl_ratio == pytest.approx(np.exp((llama["nll"] - llama["nll_base"]).mean()), rel=1e-6)
    # reverse: llama.cpp has none; the stored rows, floor entries at their floor value, renormalised
    reverse = compare_files(tmp_path / "base.kld", tmp_path / "other.npy", reverse=True)
    stored = log_p.astype(np.float64)
    expected = Comparison(reverse=True)
    expected.update(stored, b.astype(np.float64))
    assert reverse.kld_mean == pytest.approx(expected.result().kld_mean, rel=1e-9)
    assert any("--reverse" in note for note in reverse.notes)


def test_logits_beyond_float16_are_refused_with_the_way_out(tmp_path):
    with pytest.raises(ValueError, match=r"logits reach 1e\+05, beyond float16's range \(±65504\); use "
                                         "format='quantized'"):
        save_reference(tmp_path / "h.safetensors", np.array([[1e5, 0.0, 1.0]], np.float32), format="float16")
    assert not (tmp_path / "h.safetensors").exists()
    path = save_reference(tmp_path / "q.safetensors", np.array([[1e5, 0.0, 1.0]], np.float32), format="quantized")
    assert compare_files(path, path).kld_mean == 0
