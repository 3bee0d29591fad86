import pocketflow


def test_flow_span_parents_node_span(telemetry):
    class Hello(pocketflow.Node):
        def exec(self, prep_res):
            return "hi"

    pocketflow.Flow(start=Hello()).run({})
    flow = telemetry.span("invoke_workflow Flow")
    assert [span.name for span in telemetry.children(flow)] == ["Hello"]
