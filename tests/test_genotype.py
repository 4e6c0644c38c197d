import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nasnet_backbones import OPS, Block, CellSpec, Genotype, GenotypeError, genotypes
from nasnet_backbones.genotype import SCHEMA_VERSION


def _cell(blocks, concat):
    return CellSpec(tuple(Block(tuple(i), tuple(o)) for i, o in blocks), tuple(concat))


GOOD = _cell([((0, 1), ("sep_conv_3x3", "identity")), ((2, 0), ("max_pool_3x3", "conv_1x1"))], [1, 3])


def test_nasnet_a_is_tf_slims_cell():
    """NASNet-A as TF-slim writes it (nasnet_utils.NasNetANormalCell / ReductionCell)."""
    n, r = genotypes.NASNET_A.normal, genotypes.NASNET_A.reduce
    assert [op for b in n.blocks for op in b.ops] == [
        "sep_conv_5x5", "sep_conv_3x3", "sep_conv_5x5", "sep_conv_3x3", "avg_pool_3x3",
        "identity", "avg_pool_3x3", "avg_pool_3x3", "sep_conv_3x3", "identity"]
    assert [i for b in n.blocks for i in b.inputs] == [0, 1, 1, 1, 0, 1, 1, 1, 0, 0]
    assert n.concat == (1, 2, 3, 4, 5, 6)  # h1 is concatenated although blocks read it
    assert [i for b in r.blocks for i in b.inputs] == [0, 1, 0, 1, 0, 1, 3, 2, 2, 0]
    assert r.concat == (3, 4, 5, 6)


def test_darts_indices_are_swapped_on_import():
    # DARTS_V2 normal block 0 is (sep_conv_3x3, 0), (sep_conv_3x3, 1) in DARTS numbering,
    # where 0 is the cell two back: ours reads state 1 then state 0.
    b0 = genotypes.DARTS_V2.normal.blocks[0]
    assert b0.inputs == (1, 0)
    assert genotypes.DARTS_V2.normal.blocks[3].ops == ("skip_connect", "dil_sep_conv_3x3")
    assert genotypes.DARTS_V2.normal.concat == (2, 3, 4, 5)


def test_pnasnet_uses_one_cell_for_both():
    assert genotypes.PNASNET_5.normal == genotypes.PNASNET_5.reduce
    assert genotypes.PNASNET_5.normal.concat == (2, 3, 4, 5, 6)


@pytest.mark.parametrize("genotype", list(genotypes.GENOTYPES.values()), ids=list(genotypes.GENOTYPES))
def test_shipped_genotypes_round_trip(genotype, tmp_path):
    path = tmp_path / "cell.json"
    text = genotype.to_json(path)
    assert path.read_text() == text
    back = Genotype.from_json(path)
    assert back == genotype and back.hash() == genotype.hash()
    assert json.loads(text)["schema_version"] == SCHEMA_VERSION


def test_hash_ignores_name_and_distinguishes_cells():
    a = Genotype(GOOD, GOOD, name="a")
    b = Genotype(GOOD, GOOD, name="b")
    assert a.hash() == b.hash()
    assert a.hash() != genotypes.NASNET_A.hash()
    assert len({g.hash() for g in genotypes.GENOTYPES.values()}) == len(genotypes.GENOTYPES)


@pytest.mark.parametrize(
    "blocks, concat, message",
    [
        ([((0, 1), ("sep_conv_9x9", "identity"))], [2], r"normal\.blocks\[0\]\.ops\[0\]: unknown op 'sep_conv_9x9'"),
        ([((0, 2), ("identity", "identity"))], [2], r"normal\.blocks\[0\]\.inputs\[1\]: input index 2 out of range"),
        ([((0, -1), ("identity", "identity"))], [2], r"inputs\[1\]: input index -1"),
        ([], [1], r"normal: the cell has no blocks"),
        ([((0, 1), ("identity", "identity"))], [], r"normal\.concat: empty"),
        ([((0, 1), ("identity", "identity"))], [7], r"normal\.concat: state 7 out of range"),
        ([((0, 1), ("identity", "identity"))], [2, 2], r"repeated state"),
        ([((0, 1), ("identity", "identity")), ((0, 1), ("identity", "identity"))], [3],
         r"blocks\[0\]: its output \(state 2\) is neither read"),
    ],
)
def test_validation_names_field_and_block(blocks, concat, message):
    with pytest.raises(GenotypeError, match=message):
        Genotype(_cell(blocks, concat), GOOD)


def test_block_count_check():
    with pytest.raises(GenotypeError, match=r"normal: expected 5 blocks \(B\), got 2"):
        Genotype(GOOD, GOOD).check_num_blocks(5)
    genotypes.NASNET_A.check_num_blocks(5)


def test_unknown_combine_op():
    cell = CellSpec((Block((0, 1), ("identity", "identity"), "mul"),), (2,))
    with pytest.raises(GenotypeError, match=r"reduce\.blocks\[0\]\.combine: unknown combine op 'mul'"):
        Genotype(GOOD, cell)


@pytest.mark.parametrize(
    "text, message",
    [
        ("{not json", r"not valid JSON"),
        ('{"schema_version": 99, "normal": {}, "reduce": {}}', r"schema_version: expected 1, got 99"),
        ('{"schema_version": 1, "normal": {"blocks": [], "concat": [1]}}', r"missing field 'reduce'"),
        ('{"schema_version": 1, "normal": {"blocks": [{"inputs": [0, 1]}], "concat": [2]}, "reduce": {}}',
         r"normal\.blocks\[0\]: expected an object with 'inputs' and 'ops'"),
    ],
)
def test_bad_json_files(tmp_path, text, message):
    path = tmp_path / "bad.json"
    path.write_text(text)
    with pytest.raises(GenotypeError, match=message) as info:
        Genotype.from_json(path)
    assert str(path) in str(info.value)


def test_bad_op_in_file_names_block(tmp_path):
    data = genotypes.NASNET_A.to_dict()
    data["reduce"]["blocks"][3]["ops"][1] = "avg_pool_9x9"
    path = tmp_path / "cell.json"
    path.write_text(json.dumps(data))
    with pytest.raises(GenotypeError, match=r"reduce\.blocks\[3\]\.ops\[1\]: unknown op 'avg_pool_9x9'"):
        Genotype.from_json(path)


def test_missing_file():
    with pytest.raises(FileNotFoundError, match="genotype file not found"):
        Genotype.from_json("/nonexistent/cell.json")


@st.composite
def cells(draw, max_blocks=5):
    n = draw(st.integers(1, max_blocks))
    ops = sorted(OPS)
    blocks = []
    for b in range(n):
        inputs = (draw(st.integers(0, 1 + b)), draw(st.integers(0, 1 + b)))
        blocks.append(Block(inputs, (draw(st.sampled_from(ops)), draw(st.sampled_from(ops))),
                            draw(st.sampled_from(["add", "concat"]))))
    read = {i for blk in blocks for i in blk.inputs}
    unused = [2 + b for b in range(n) if 2 + b not in read]
    extra = draw(st.lists(st.integers(0, 1 + n), unique=True, max_size=3))
    concat = sorted(set(unused) | set(extra)) or [1 + n]
    return CellSpec(tuple(blocks), tuple(concat))


@settings(max_examples=60, deadline=None)
@given(cells(), cells())
def test_json_round_trip_property(normal, reduce):
    g = Genotype(normal, reduce, name="random")
    back = Genotype.from_json(g.to_json())
    assert back == g and back.hash() == g.hash()
