"""GPU kernels (Triton) on deepzip's compact weights: CSR with codebook codes or values, and dense packed codes.

The same layouts as the CPU kernels (`runtime.kernels`): ``indptr`` int32 (rows + 1), ``cols`` uint16
(int32 past 65,536 columns), and either ``codes`` uint8/uint16 into an fp32 ``codebook`` or ``values``
fp32/fp16. The dense-codes layout holds one 1/2/4/8-bit codebook index per weight, pruned or not,
packed into bytes (code of column c in byte c // per_byte, bits from (c % per_byte) * bits up), each
row padded to a multiple of 16 bytes so row starts are aligned for vector loads. The sliced layout
(`slice_rows`) is CSR reordered for the GPU's loads: rows sorted by length (longest first) and cut into
slices of `SLICE` rows, each slice stored step-major (its rows' first entries, then their second ones,
...), so 16 rows' entries at one step are 16 contiguous codes: one 16-byte load, where CSR's rows start
anywhere and a thread loads its codes a byte at a time. The slices form at most `GROUPS` groups, each slice
of a group padded to the group's longest; a program finds where its slice starts from the groups' few
numbers, passed as kernel arguments, so its first load from memory is already its weights (CSR must first
load its row pointers, a dependent round trip to memory).
"""

from __future__ import annotations

import torch

try:
    import triton
    import triton.language as tl
except ImportError as error:  # the CPU runtime does not need it
    triton = tl = None
    MISSING = (f"Triton is not installed ({error}); it ships with PyTorch's CUDA builds, or install the "
               f"extra: pip install 'deepzip[gpu]'")
else:
    MISSING = None

MAX_CODEBOOK = 1 << 16  # codes are uint8 (<= 256 entries) or uint16
PACK_BITS = (1, 2, 4, 8)  # a dense code's storage width; 3 bits are stored in 4, 5-7 in 8
ROW_ALIGN = 16  # bytes: packed rows start on 16-byte boundaries
SLICE = 16  # rows per slice of the sliced layout: 16 uint8 codes per step, one 16-byte load
# Inputs a batched launch takes: grid axis 1 (CUDA: <= 65,535 blocks) times the smallest tuned BLOCK_B (4),
# rounded down to a multiple of 16 (`_transposed` pads to 16); larger batches run in chunks (`_batch_chunks`).
MAX_BATCH_CHUNK = 65_535 * 4 // 16 * 16
EXACT_GROUPING_SLICES = 2048  # beyond this many slices the group cuts are chosen among this many points
GROUPS = 8  # slice groups of the sliced layout: ~1-2% padding on random 5-25% masks (vs 10-25% for one group)


def packed_bits(levels: int) -> int:
    """The storage width (1, 2, 4 or 8 bits) for codes taking ``levels`` values; 0 when more than 8 bits."""
    needed = max(int(levels) - 1, 1).bit_length()
    return next((b for b in PACK_BITS if b >= needed), 0)


def pack_codes(codes: torch.Tensor, bits: int) -> torch.Tensor:
    """(rows, cols) integer codes < 2**bits -> (rows, row_bytes) uint8, ``8 // bits`` codes per byte, low bits first."""
    if bits not in PACK_BITS:
        raise ValueError(f"bits must be one of {PACK_BITS}, got {bits}")
    rows, cols = codes.shape
    per = 8 // bits
    row_bytes = -(-max(-(-cols // per), 1) // ROW_ALIGN) * ROW_ALIGN
    padded = torch.zeros(rows, row_bytes * per, dtype=torch.int32, device=codes.device)
    padded[:, :cols] = codes.to(torch.int32)
    shifts = torch.arange(per, dtype=torch.int32, device=codes.device) * bits
    packed = (padded.reshape(rows, row_bytes, per) << shifts).sum(-1)
    return packed.to(torch.uint8)


def unpack_codes(packed: torch.Tensor, bits: int, cols: int) -> torch.Tensor:
    """The inverse of `pack_codes` (int64 codes), for tests and dense fallbacks."""
    per = 8 // bits
    shifts = torch.arange(per, device=packed.device) * bits
    codes = (packed.to(torch.int64)[..., None] >> shifts) & ((1 << bits) - 1)
    return codes.reshape(packed.shape[0], -1)[:, :cols]


def slice_rows(indptr, cols, data, groups: int = GROUPS):
    """CSR arrays (numpy) -> the sliced layout, a dict of numpy arrays: ``lengths`` (int32, each sorted
    row's entries), ``order`` (int32, the original row of each sorted row), ``cols`` / ``data`` (dtypes
    kept, zero padding), and per group of slices ``group_first`` (its first slice), ``group_steps`` (the
    steps every slice of it is padded to) and ``group_offset`` (where it starts), int64, ``groups`` long
    (empty groups start past the last slice). Entry ``j`` of sorted row ``q`` (slice ``q // SLICE`` in
    group ``g``) is at ``group_offset[g] + (q // SLICE - group_first[g]) * SLICE * group_steps[g] + j *
    SLICE + q % SLICE``.

    Sorting by length makes a slice's rows nearly equally long, and the groups are cut where they pad
    least (`_group_slices`). The kernels never use padded entries: a row's entries past its length are
    masked out of the input gather."""
    import numpy as np

    indptr = np.asarray(indptr, dtype=np.int64)
    lengths = np.diff(indptr)
    rows = lengths.shape[0]
    order = np.argsort(-lengths, kind="stable")
    slices = -(-rows // SLICE)
    sorted_lengths = np.zeros(slices * SLICE, dtype=np.int64)
    sorted_lengths[:rows] = lengths[order]
    longest = sorted_lengths[::SLICE]  # each slice's longest row: its first, rows being sorted
    first = _group_slices(longest, groups)
    bounds = np.append(first, slices)
    steps = np.array([longest[f] if f < slices else 0 for f in first], dtype=np.int64)
    offset = np.concatenate([[0], np.cumsum(np.diff(bounds) * SLICE * steps)])
    if offset[-1] > np.iinfo(np.int32).max:
        raise ValueError(f"the sliced layout holds at most 2**31 - 1 entries, this one needs {offset[-1]:,}")
    rank = np.empty(rows, dtype=np.int64)
    rank[order] = np.arange(rows)  # sorted position of each original row
    row_of = np.repeat(np.arange(rows), lengths)
    q = rank[row_of]
    g = np.searchsorted(first, q // SLICE, side="right") - 1
    where = offset[g] + (q // SLICE - first[g]) * SLICE * steps[g] + (np.arange(indptr[-1]) - indptr[row_of]) * SLICE \
        + q % SLICE
    out_cols = np.zeros(offset[-1], dtype=np.asarray(cols).dtype)
    out_data = np.zeros(offset[-1], dtype=np.asarray(data).dtype)
    out_cols[where], out_data[where] = cols, data
    return {"lengths": lengths[order].astype(np.int32), "order": order.astype(np.int32), "cols": out_cols,
            "data": out_data, "group_first": first, "group_steps": steps, "group_offset": offset[:-1]}


def _group_slices(longest, groups: int):
    """The first slice of each of ``groups`` groups (int64, ascending; a group may be empty, and then starts
    where the next one does, or at the slice count) cutting the slices, longest first, where the padding
    to each group's longest is least: a dynamic program over the cut points, O(groups * points**2) numpy
    work. The points are every slice up to `EXACT_GROUPING_SLICES` slices (32,768 rows), else that many
    evenly spaced ones (a 250,000-row layer: ~0.3 s, padding within a point's spacing of the optimum)."""
    import numpy as np

    count = len(longest)
    points = np.arange(count + 1) if count <= EXACT_GROUPING_SLICES else \
        np.unique(np.linspace(0, count, EXACT_GROUPING_SLICES + 1).round().astype(np.int64))
    padded_to = np.append(np.asarray(longest, dtype=np.float64), 0.0)[points]  # a group from point i pads to it
    size = len(points) - 1
    cost = np.full(size + 1, np.inf)
    cost[0] = 0.0  # cost[j]: the least padded size of the slices before point j in the groups so far
    starts = []
    for _ in range(groups):
        new, start = cost.copy(), np.arange(size + 1)  # the new group empty: start = j
        for j in range(1, size + 1):
            options = cost[:j] + (points[j] - points[:j]) * padded_to[:j]
            best = int(np.argmin(options))
            if options[best] < new[j]:
                new[j], start[j] = options[best], best
        starts.append(start)
        cost = new
    first, j = [], size
    for start in reversed(starts):  # walk the groups back from the last
        j = int(start[j])
        first.append(int(points[j]))
    return np.array(first[::-1], dtype=np.int64)


def _bench(kernel_call, quantiles):
    # Shorter than Triton's default (25 + 100 ms per config): a batch-1 kernel runs in microseconds,
    # and many layers are tuned when a model is converted.
    return triton.testing.do_bench(kernel_call, warmup=5, rep=25, quantiles=quantiles)


if triton is not None:
    @triton.jit
    def _entries(cols, data, codebook, at, mask, CODED: tl.constexpr):
        """The columns (int32) and fp32 weights of the entries at ``at``: codes looked up in the codebook (a
        <= 256-entry table, cached) or values."""
        c = tl.load(cols + at, mask=mask, other=0).to(tl.int32)
        if CODED:
            k = tl.load(data + at, mask=mask, other=0).to(tl.int32)
            w = tl.load(codebook + k)
        else:
            w = tl.load(data + at, mask=mask, other=0.0).to(tl.float32)
        return c, w

    @triton.jit
    def _csr_mv(indptr, cols, data, codebook, x, bias, y, rows, nnz_bucket,
                CODED: tl.constexpr, HAS_BIAS: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_N: tl.constexpr):
        """y[r] = sum_j w(r, j) * x[cols[j]] (+ bias[r]) for a block of BLOCK_R rows, batch 1."""
        r = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)
        live = r < rows
        start = tl.load(indptr + r, mask=live, other=0)
        length = tl.load(indptr + r + 1, mask=live, other=0) - start
        longest = tl.max(length, axis=0)
        acc = tl.zeros([BLOCK_R, BLOCK_N], dtype=tl.float32)
        j0 = longest * 0  # an int32 scalar, as the loop keeps it
        while j0 < longest:  # (a while loop: Triton's interpreter cannot take a reduced bound in range())
            j = j0 + tl.arange(0, BLOCK_N)
            inside = j[None, :] < length[:, None]
            at = start[:, None] + j[None, :]
            c, w = _entries(cols, data, codebook, at, inside, CODED)
            xv = tl.load(x + c, mask=inside, other=0.0).to(tl.float32)
            acc += w * xv
            j0 += BLOCK_N
        out = tl.sum(acc, axis=1)
        if HAS_BIAS:
            out += tl.load(bias + r, mask=live, other=0.0).to(tl.float32)
        tl.store(y + r, out.to(y.dtype.element_ty), mask=live)

    @triton.jit
    def _csr_mm(indptr, cols, data, codebook, x, bias, y, rows, batch, stride_x, stride_y, nnz_bucket,
                CODED: tl.constexpr, HAS_BIAS: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_N: tl.constexpr,
                BLOCK_B: tl.constexpr):
        """y[b, r] = sum_j w(r, j) * x[b, cols[j]] (+ bias[r]): a block of rows times a block of the batch."""
        r = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)
        b = tl.program_id(1) * BLOCK_B + tl.arange(0, BLOCK_B)
        live, in_batch = r < rows, b < batch
        start = tl.load(indptr + r, mask=live, other=0)
        length = tl.load(indptr + r + 1, mask=live, other=0) - start
        longest = tl.max(length, axis=0)
        acc = tl.zeros([BLOCK_R, BLOCK_N, BLOCK_B], dtype=tl.float32)
        j0 = longest * 0  # an int32 scalar, as the loop keeps it
        while j0 < longest:  # (a while loop: Triton's interpreter cannot take a reduced bound in range())
            j = j0 + tl.arange(0, BLOCK_N)
            inside = j[None, :] < length[:, None]
            at = start[:, None] + j[None, :]
            c, w = _entries(cols, data, codebook, at, inside, CODED)
            xv = tl.load(x + b[None, None, :] * stride_x + c[:, :, None],
                         mask=inside[:, :, None] & in_batch[None, None, :], other=0.0).to(tl.float32)
            acc += w[:, :, None] * xv
            j0 += BLOCK_N
        out = tl.sum(acc, axis=1)  # [BLOCK_R, BLOCK_B]
        if HAS_BIAS:
            out += tl.load(bias + r, mask=live, other=0.0).to(tl.float32)[:, None]
        tl.store(y + b[None, :] * stride_y + r[:, None], out.to(y.dtype.element_ty),
                 mask=live[:, None] & in_batch[None, :])

    @triton.jit
    def _codes_mv(packed, codebook, x, bias, y, rows, width: tl.constexpr, row_bytes: tl.constexpr,
                  BITS: tl.constexpr, HAS_BIAS: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_K: tl.constexpr):
        """y[r] = sum_c codebook[code(r, c)] * x[c] (+ bias[r]), batch 1; BLOCK_K packed bytes per step."""
        PER: tl.constexpr = 8 // BITS
        MASK: tl.constexpr = (1 << BITS) - 1
        r = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)
        live = r < rows
        acc = tl.zeros([BLOCK_R, BLOCK_K], dtype=tl.float32)
        for k0 in range(0, row_bytes, BLOCK_K):
            i = k0 + tl.arange(0, BLOCK_K)
            byte = tl.load(packed + r[:, None] * row_bytes + i[None, :],
                           mask=live[:, None] & (i[None, :] < row_bytes), other=0).to(tl.int32)
            for s in tl.static_range(PER):
                col = i * PER + s
                xv = tl.load(x + col, mask=col < width, other=0.0).to(tl.float32)
                w = tl.load(codebook + ((byte >> (s * BITS)) & MASK))
                acc += w * xv[None, :]
        out = tl.sum(acc, axis=1)
        if HAS_BIAS:
            out += tl.load(bias + r, mask=live, other=0.0).to(tl.float32)
        tl.store(y + r, out.to(y.dtype.element_ty), mask=live)

    @triton.jit
    def _codes_mm(packed, codebook, x, bias, y, rows, width: tl.constexpr, row_bytes: tl.constexpr, batch,
                  stride_x, stride_y, BITS: tl.constexpr, HAS_BIAS: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_K: tl.constexpr,
                  BLOCK_B: tl.constexpr):
        """y[b, r] for a block of rows and of the batch: each weight tile decoded once, then ``tl.dot``."""
        PER: tl.constexpr = 8 // BITS
        MASK: tl.constexpr = (1 << BITS) - 1
        r = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)
        b = tl.program_id(1) * BLOCK_B + tl.arange(0, BLOCK_B)
        live, in_batch = r < rows, b < batch
        acc = tl.zeros([BLOCK_R, BLOCK_B], dtype=tl.float32)
        for k0 in range(0, row_bytes, BLOCK_K):
            i = k0 + tl.arange(0, BLOCK_K)
            byte = tl.load(packed + r[:, None] * row_bytes + i[None, :],
                           mask=live[:, None] & (i[None, :] < row_bytes), other=0).to(tl.int32)
            for s in tl.static_range(PER):
                col = i * PER + s
                xv = tl.load(x + b[None, :] * stride_x + col[:, None],
                             mask=(col[:, None] < width) & in_batch[None, :], other=0.0).to(tl.float32)
                w = tl.load(codebook + ((byte >> (s * BITS)) & MASK))
                acc += tl.dot(w, xv, input_precision="ieee")
        if HAS_BIAS:
            acc += tl.load(bias + r, mask=live, other=0.0).to(tl.float32)[:, None]
        tl.store(y + b[None, :] * stride_y + r[:, None], acc.to(y.dtype.element_ty),
                 mask=live[:, None] & in_batch[None, :])

    _SLICE = tl.constexpr(SLICE)  # (a global a kernel reads must be a constexpr)

    # The groups of the sliced layout as kernel arguments: f1..f7 the first slice of groups 1-7 (group 0
    # starts at slice 0), n0..n7 the steps of each group's slices. Not specialized by Triton (their values
    # differ per layer; specializing on "divisible by 16" would compile a kernel per layer).
    _GROUP_ARGS = ["f1", "f2", "f3", "f4", "f5", "f6", "f7", "n0", "n1", "n2", "n3", "n4", "n5", "n6", "n7"]

    @triton.jit
    def _next_group(s, offset, start, steps, first, group_steps):
        """Past ``first`` (the next group's first slice), that group's start and steps take over."""
        past = s >= first
        offset = tl.where(past, offset + (first - start) * _SLICE * steps, offset)
        return offset, tl.where(past, first, start), tl.where(past, group_steps, steps)

    @triton.jit
    def _sliced_rows(pid, lengths, order, rows, f1, f2, f3, f4, f5, f6, f7, n0, n1, n2, n3, n4, n5, n6, n7,
                     BLOCK_R: tl.constexpr):
        """A program's BLOCK_R sorted rows (a part of one slice): where its entries start and how many steps
        its slice has (arithmetic on the arguments: no load), each row's length, the rows' original indices
        and which of them exist."""
        PARTS: tl.constexpr = _SLICE // BLOCK_R
        s = pid // PARTS
        lane = (pid % PARTS) * BLOCK_R  # a multiple of BLOCK_R: the loads below stay aligned
        offset, start, steps = s * 0, s * 0, n0 + s * 0
        offset, start, steps = _next_group(s, offset, start, steps, f1, n1)
        offset, start, steps = _next_group(s, offset, start, steps, f2, n2)
        offset, start, steps = _next_group(s, offset, start, steps, f3, n3)
        offset, start, steps = _next_group(s, offset, start, steps, f4, n4)
        offset, start, steps = _next_group(s, offset, start, steps, f5, n5)
        offset, start, steps = _next_group(s, offset, start, steps, f6, n6)
        offset, start, steps = _next_group(s, offset, start, steps, f7, n7)
        base = offset + (s - start) * _SLICE * steps
        i = s * _SLICE + lane + tl.arange(0, BLOCK_R)
        live = i < rows
        length = tl.load(lengths + i, mask=live, other=0)
        dest = tl.load(order + i, mask=live, other=0)
        return tl.multiple_of(base, _SLICE) + lane, steps, length, dest, live

    @triton.jit(do_not_specialize=_GROUP_ARGS)
    def _sliced_mv(lengths, order, cols, data, codebook, x, bias, y, rows, steps_bucket,
                   f1, f2, f3, f4, f5, f6, f7, n0, n1, n2, n3, n4, n5, n6, n7,
                   CODED: tl.constexpr, HAS_BIAS: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_J: tl.constexpr):
        """y[order[i]] = sum over step j of w(i, j) * x[col(i, j)] for BLOCK_R sorted rows i, batch 1.

        The tile is [steps, rows]: along rows the entries are contiguous (vector loads), its mask depends
        on the step alone (the slice's length), and a row's own length masks only the input gather."""
        base, steps, length, dest, live = _sliced_rows(tl.program_id(0), lengths, order, rows, f1, f2, f3, f4, f5, f6,
                                                         f7, n0, n1, n2, n3, n4, n5, n6, n7, BLOCK_R)
        r = tl.arange(0, BLOCK_R)
        acc = tl.zeros([BLOCK_J, BLOCK_R], dtype=tl.float32)
        j0 = steps * 0
        while j0 < steps:  # (a while loop: Triton's interpreter cannot take a loaded bound in range())
            j = j0 + tl.arange(0, BLOCK_J)
            at = base + j[:, None] * _SLICE + r[None, :]
            in_slice = (j < steps)[:, None]
            c, w = _entries(cols, data, codebook, at, in_slice, CODED)
            xv = tl.load(x + c, mask=j[:, None] < length[None, :], other=0.0).to(tl.float32)
            acc += w * xv
            j0 += BLOCK_J
        out = tl.sum(acc, axis=0)
        if HAS_BIAS:
            out += tl.load(bias + dest, mask=live, other=0.0).to(tl.float32)
        tl.store(y + dest, out.to(y.dtype.element_ty), mask=live)

    @triton.jit(do_not_specialize=_GROUP_ARGS)
    def _sliced_mm(lengths, order, cols, data, codebook, xt, bias, y, rows, batch, stride_xt, stride_y,
                   steps_bucket, f1, f2, f3, f4, f5, f6, f7, n0, n1, n2, n3, n4, n5, n6, n7,
                   CODED: tl.constexpr, HAS_BIAS: tl.constexpr, BLOCK_R: tl.constexpr,
                   BLOCK_J: tl.constexpr, BLOCK_B: tl.constexpr):
        """`_sliced_mv` with a batch axis: each weight is loaded and decoded once for BLOCK_B inputs.

        ``xt`` is the input transposed, (in, stride_xt) with the batch contiguous and zero-padded to a
        multiple of 16 (`_transposed`): an entry's BLOCK_B inputs are one contiguous gather (16-byte loads)
        where x's rows would be BLOCK_B separate cache lines; the padding keeps the gather unmasked by batch."""
        base, steps, length, dest, live = _sliced_rows(tl.program_id(0), lengths, order, rows, f1, f2, f3, f4, f5, f6,
                                                         f7, n0, n1, n2, n3, n4, n5, n6, n7, BLOCK_R)
        b = tl.program_id(1) * BLOCK_B + tl.arange(0, BLOCK_B)
        r = tl.arange(0, BLOCK_R)
        acc = tl.zeros([BLOCK_J, BLOCK_R, BLOCK_B], dtype=tl.float32)
        j0 = steps * 0
        while j0 < steps:
            j = j0 + tl.arange(0, BLOCK_J)
            at = base + j[:, None] * _SLICE + r[None, :]
            in_slice = (j < steps)[:, None]
            c, w = _entries(cols, data, codebook, at, in_slice, CODED)
            used = (j[:, None] < length[None, :])[:, :, None]
            xv = tl.load(xt + c[:, :, None] * stride_xt + b[None, None, :], mask=used, other=0.0).to(tl.float32)
            acc += w[:, :, None] * xv
            j0 += BLOCK_J
        out = tl.sum(acc, axis=0)  # [BLOCK_R, BLOCK_B]
        if HAS_BIAS:
            out += tl.load(bias + dest, mask=live, other=0.0).to(tl.float32)[:, None]
        tl.store(y + b[None, :] * stride_y + dest[:, None], out.to(y.dtype.element_ty),
                 mask=live[:, None] & (b < batch)[None, :])

    def _tuned(kernel, key: list[str], names: tuple[str, ...], table: list[tuple]):
        """``kernel`` autotuned over ``table``'s rows: values for ``names``, then the warps."""
        configs = [triton.Config(dict(zip(names, row[:-1])), num_warps=row[-1]) for row in table]
        return triton.autotune(configs=configs, key=key, do_bench=_bench)(kernel)

    # The tuned versions, used on the GPU. Keys: the shape (and nonzeros, which set the work per row).
    _csr_mv_tuned = _tuned(_csr_mv, ["rows", "nnz_bucket", "CODED"], ("BLOCK_R", "BLOCK_N"), [
        (4, 64, 2), (8, 64, 4), (8, 128, 4), (16, 32, 4), (16, 64, 8), (32, 32, 8), (4, 128, 4), (2, 256, 4),
        # whole rows in one or two steps, many programs: fewer dependent column-then-gather round trips
        # per row (the first H200 run was latency-bound)
        (1, 256, 2), (1, 512, 4), (2, 512, 8), (4, 256, 8), (1, 1024, 8), (2, 128, 2)])
    _csr_mm_tuned = _tuned(_csr_mm, ["rows", "nnz_bucket", "batch", "CODED"], ("BLOCK_R", "BLOCK_N", "BLOCK_B"), [
        (4, 32, 16, 4), (8, 32, 16, 8), (4, 64, 16, 8), (8, 16, 16, 4), (16, 16, 16, 8), (8, 64, 4, 4)])
    # Sliced: BLOCK_R rows of a 16-row slice (16: one 16-byte load of codes a step), BLOCK_J steps a trip;
    # many small programs keep one wave of the grid resident and many loads in flight.
    _sliced_mv_tuned = _tuned(_sliced_mv, ["rows", "steps_bucket", "CODED"], ("BLOCK_R", "BLOCK_J"), [
        (16, 64, 4), (16, 128, 4), (16, 256, 8), (16, 512, 8), (8, 128, 4), (8, 256, 4), (8, 512, 8), (4, 256, 4),
        (4, 512, 4), (4, 1024, 8), (2, 512, 4)])  # ((8, 1024, 8) spills: benchmarks/gpu_compile.py)
    _sliced_mm_tuned = _tuned(_sliced_mm, ["rows", "steps_bucket", "batch", "CODED"], ("BLOCK_R", "BLOCK_J", "BLOCK_B"), [
        (16, 16, 16, 4), (16, 32, 16, 8), (8, 32, 16, 4), (8, 64, 16, 8), (16, 64, 4, 4), (4, 64, 16, 8)])
    _codes_mv_tuned = _tuned(_codes_mv, ["rows", "width", "BITS"], ("BLOCK_R", "BLOCK_K"), [
        (4, 64, 2), (8, 64, 4), (8, 128, 4), (16, 64, 4), (16, 128, 8), (32, 32, 4)])
    _codes_mm_tuned = _tuned(_codes_mm, ["rows", "width", "batch", "BITS"], ("BLOCK_R", "BLOCK_K", "BLOCK_B"), [
        (16, 32, 16, 4), (32, 32, 16, 4), (16, 64, 16, 4), (64, 32, 16, 8)])


# Off the GPU (the interpreter) there is nothing to tune and no benchmarker: one small configuration.
_INTERPRETED = {"csr_mv": {"BLOCK_R": 4, "BLOCK_N": 16}, "csr_mm": {"BLOCK_R": 4, "BLOCK_N": 16, "BLOCK_B": 4},
                "codes_mv": {"BLOCK_R": 4, "BLOCK_K": 16}, "codes_mm": {"BLOCK_R": 16, "BLOCK_K": 16, "BLOCK_B": 16},
                "sliced_mv": {"BLOCK_R": 8, "BLOCK_J": 8}, "sliced_mm": {"BLOCK_R": 4, "BLOCK_J": 8, "BLOCK_B": 4}}


def require() -> None:
    """Raise a clear error when the kernels cannot run here (Triton missing)."""
    if MISSING is not None:
        raise RuntimeError(MISSING)


def _nnz_bucket(nnz: int, rows: int) -> int:
    """Mean nonzeros per row, rounded to a power of two: tuning is shared by layers of similar density."""
    return 1 << max(nnz // max(rows, 1), 1).bit_length()


def _launch(name: str, tuned, plain, grid, *args, **constants) -> None:
    if args[0].is_cuda:
        tuned[grid](*args, **constants)
    else:
        config = _INTERPRETED[name]
        plain[grid(config)](*args, **constants, **config)


def _output(x2: torch.Tensor, rows: int, out: torch.Tensor | None) -> torch.Tensor:
    return torch.empty(x2.shape[0], rows, dtype=x2.dtype, device=x2.device) if out is None else out


def csr_matmul(indptr: torch.Tensor, cols: torch.Tensor, data: torch.Tensor, codebook: torch.Tensor | None,
               x: torch.Tensor, bias: torch.Tensor | None = None, out: torch.Tensor | None = None) -> torch.Tensor:
    """(batch, in) ``x`` times the CSR weight's transpose (+ bias): (batch, rows), in ``x``'s dtype.

    ``data``: codes into ``codebook`` (uint8/uint16), or values (fp32/fp16/bf16) with ``codebook`` None.
    Every tensor on one device, ``x`` 2-D with contiguous rows.
    """
    require()
    rows, batch = indptr.shape[0] - 1, x.shape[0]
    y = _output(x, rows, out)
    if rows == 0 or batch == 0:
        return y
    coded = codebook is not None
    book = codebook if coded else data  # an unused pointer must still be a tensor
    has_bias = bias is not None
    bias_arg = bias if has_bias else y
    bucket = _nnz_bucket(data.shape[0], rows)
    if batch == 1:
        grid = lambda meta: (triton.cdiv(rows, meta["BLOCK_R"]),)  # noqa: E731
        _launch("csr_mv", _csr_mv_tuned, _csr_mv, grid, indptr, cols, data, book, x, bias_arg, y, rows, bucket,
                CODED=coded, HAS_BIAS=has_bias)
    else:
        for xs, ys in _batch_chunks(x, y):
            grid = lambda meta, n=xs.shape[0]: (triton.cdiv(rows, meta["BLOCK_R"]),  # noqa: E731
                                                triton.cdiv(n, meta["BLOCK_B"]))
            _launch("csr_mm", _csr_mm_tuned, _csr_mm, grid, indptr, cols, data, book, xs, bias_arg, ys, rows,
                    xs.shape[0], xs.stride(0), ys.stride(0), bucket, CODED=coded, HAS_BIAS=has_bias)
    return y


def codes_matmul(packed: torch.Tensor, bits: int, width: int, codebook: torch.Tensor, x: torch.Tensor,
                 bias: torch.Tensor | None = None, out: torch.Tensor | None = None) -> torch.Tensor:
    """(batch, width) ``x`` times the transpose of the weight ``codebook[unpack(packed)]`` (+ bias)."""
    require()
    rows, row_bytes = packed.shape
    batch = x.shape[0]
    y = _output(x, rows, out)
    if rows == 0 or batch == 0:
        return y
    has_bias = bias is not None
    bias_arg = bias if has_bias else y
    if batch == 1:
        grid = lambda meta: (triton.cdiv(rows, meta["BLOCK_R"]),)  # noqa: E731
        _launch("codes_mv", _codes_mv_tuned, _codes_mv, grid, packed, codebook, x, bias_arg, y, rows, width,
                row_bytes, BITS=bits, HAS_BIAS=has_bias)
    else:
        for xs, ys in _batch_chunks(x, y):
            grid = lambda meta, n=xs.shape[0]: (triton.cdiv(rows, meta["BLOCK_R"]),  # noqa: E731
                                                triton.cdiv(n, meta["BLOCK_B"]))
            _launch("codes_mm", _codes_mm_tuned, _codes_mm, grid, packed, codebook, xs, bias_arg, ys, rows, width,
                    row_bytes, xs.shape[0], xs.stride(0), ys.stride(0), BITS=bits, HAS_BIAS=has_bias)
    return y


def sliced_matmul(groups: tuple[int, ...], lengths: torch.Tensor, order: torch.Tensor, cols: torch.Tensor,
                  data: torch.Tensor, codebook: torch.Tensor | None, x: torch.Tensor,
                  bias: torch.Tensor | None = None, out: torch.Tensor | None = None) -> torch.Tensor:
    """`csr_matmul` on the sliced layout (`slice_rows`'s arrays on the device; ``groups`` = `group_args` of
    its groups): (batch, rows) in ``x``'s dtype."""
    require()
    rows, batch = lengths.shape[0], x.shape[0]
    y = _output(x, rows, out)
    if rows == 0 or batch == 0:
        return y
    coded = codebook is not None
    book = codebook if coded else data
    has_bias = bias is not None
    bias_arg = bias if has_bias else y
    bucket = _nnz_bucket(data.shape[0], rows)  # the slices' steps, to a power of two, roughly
    parts = lambda meta: triton.cdiv(rows, SLICE) * (SLICE // meta["BLOCK_R"])  # noqa: E731
    if batch == 1:
        grid = lambda meta: (parts(meta),)  # noqa: E731
        _launch("sliced_mv", _sliced_mv_tuned, _sliced_mv, grid, lengths, order, cols, data, book, x, bias_arg, y,
                rows, bucket, *groups, CODED=coded, HAS_BIAS=has_bias)
    else:
        for xs, ys in _batch_chunks(x, y):
            xt = _transposed(xs)
            grid = lambda meta, n=xs.shape[0]: (parts(meta), triton.cdiv(n, meta["BLOCK_B"]))  # noqa: E731
            _launch("sliced_mm", _sliced_mm_tuned, _sliced_mm, grid, lengths, order, cols, data, book, xt, bias_arg,
                    ys, rows, xs.shape[0], xt.stride(0), ys.stride(0), bucket, *groups, CODED=coded, HAS_BIAS=has_bias)
    return y


def _batch_chunks(x: torch.Tensor, y: torch.Tensor):
    """(x, y) row slices a launch can take: CUDA caps a grid's second axis (the batch blocks) at 65,535, and
    the kernels index in int32, so a chunk's elements (input, transposed input, output) stay under 2**31.
    A convolution's im2col batch (images x output pixels) passes these; a layer's batch 1-16 never does."""
    widest = max(x.shape[1], y.shape[1], x.stride(0), y.stride(0), 1)
    most = min(MAX_BATCH_CHUNK, max(SLICE, (2**31 - 1) // (widest + SLICE) // SLICE * SLICE))
    for start in range(0, x.shape[0], most):
        yield x[start:start + most], y[start:start + most]


def group_args(layout: dict) -> tuple[int, ...]:
    """The kernels' group arguments from `slice_rows`'s layout: groups 1-7's first slices, then the 8 groups'
    steps (plain ints, so a launch reads no device memory to know them)."""
    if len(layout["group_first"]) != GROUPS:
        raise ValueError(f"the kernels take a layout of {GROUPS} groups, got {len(layout['group_first'])}")
    return tuple(int(v) for v in layout["group_first"][1:]) + tuple(int(v) for v in layout["group_steps"])


def _transposed(x: torch.Tensor) -> torch.Tensor:
    """(batch, in) -> (in, batch rounded up to 16), zero-padded: the layout `_sliced_mm` gathers from.
    Its row stride is then a multiple of 16, which Triton's launcher specializes on (aligned vector loads);
    the tuned BLOCK_B never exceeds 16, so no program reads past the padding."""
    batch = x.shape[0]
    padded = -(-batch // 16) * 16
    if padded != batch:
        x = torch.nn.functional.pad(x, (0, 0, 0, padded - batch))
    return x.t().contiguous()
