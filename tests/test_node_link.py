import json

import pytest
from hypothesis import given, settings

from dags import random_graphs
from olla_onnx.errors import GraphError, OllaInputError
from olla_onnx.formats.nodelink import graph_from_node_link, graph_to_node_link, load_node_link, write_node_link
from olla_onnx.ir.memory import simulate


def chain_data(**extra):
    return {
        "directed": True,
        "nodes": [{"id": "a", "size": 4}, {"id": "b", "size": 8}, {"id": "c", "size": 2, **extra}],
        "edges": [{"source": "a", "target": "b"}, {"source": "b", "target": "c"}, {"source": "a", "target": "c"}],
    }


def test_reads_sizes_edges_and_outputs(tmp_path):
    p = tmp_path / "g.json"
    p.write_text(json.dumps(chain_data()))
    g, _ = load_node_link(p)
    assert g.num_nodes == 3 and g.outputs == ("c",)
    assert g.preds[g.index_of("c")] == (0, 1)
    assert simulate(g, [0, 1, 2]).peak == 4 + 8 + 2


def test_legacy_links_key_and_size_attr():
    data = chain_data()
    data["links"] = data.pop("edges")
    for nd in data["nodes"]:
        nd["bytes"] = nd.pop("size")
    g = graph_from_node_link(data, size_attr="bytes")
    assert g.tensors["b"].size == 8


@pytest.mark.parametrize(
    "mutate,message",
    [
        (lambda d: d["nodes"][1].pop("size"), "node 'b' has no 'size' attribute"),
        (lambda d: d["nodes"][1].update(size=-3), "not a non-negative whole number"),
        (lambda d: d["nodes"][1].update(size="big"), "not a non-negative whole number"),
        (lambda d: d["edges"].append({"source": "a", "target": "zz"}), "unknown node 'zz'"),
        (lambda d: d["nodes"].append({"id": "a", "size": 1}), "appears twice"),
    ],
)
def test_bad_node_link_input(mutate, message):
    data = chain_data()
    mutate(data)
    with pytest.raises(OllaInputError, match=message):
        graph_from_node_link(data)


def test_cycle_is_named():
    data = chain_data()
    data["edges"].append({"source": "c", "target": "a"})
    with pytest.raises(GraphError, match="cycle"):
        graph_from_node_link(data)


def test_not_json(tmp_path):
    p = tmp_path / "g.json"
    p.write_text("{nope")
    with pytest.raises(OllaInputError, match="not valid JSON"):
        load_node_link(p)


@settings(max_examples=50, deadline=None)
@given(random_graphs(max_nodes=12, max_outputs=1, resident=False))
def test_round_trip_and_reordered_write(tmp_path_factory, g):
    data = graph_to_node_link(g)
    g2 = graph_from_node_link(data)
    order = list(reversed(g.topological_order()))[::-1]
    assert simulate(g2, order).peak >= 0
    out = tmp_path_factory.mktemp("o") / "out.json"
    write_node_link(data, g2, order, out)
    written = json.loads(out.read_text())
    assert [nd["id"] for nd in written["nodes"]] == [g2.nodes[v].name for v in order]
    g3 = graph_from_node_link(written)
    assert g3.topological_order() == list(range(g3.num_nodes))
