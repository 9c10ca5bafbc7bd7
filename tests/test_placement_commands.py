import pytest

from mlsysops.mechanisms.placement_commands import CommandError, parse_command


def test_our_format_round_trip():
    acts = parse_command({"app": "a", "actions": [
        {"action": "deploy", "component": "c", "node": "n1", "instance_id": "a.c.0@n1"},
        {"action": "move", "component": "c", "from": "n1", "to": "n2", "new_instance_id": "a.c.0@n2"},
        {"action": "remove", "component": "c", "instance_id": "a.c.0@n2"}]})
    assert [a.action for a in acts] == ["deploy", "move", "remove"]
    assert acts[1].source == "n1" and acts[1].target == "n2" and acts[1].extra["new_instance_id"] == "a.c.0@n2"


def test_original_fluidity_format_is_accepted():
    acts = parse_command({"name": "app", "deployment_plan": {
        "web": [{"action": "deploy", "host": "n1"}, {"action": "move", "src_host": "n1", "target_host": "n2"}],
        "db": [{"action": "change_spec", "new_spec": {"metadata": {"name": "db"}}, "host": "n3"}],
        "initial_plan": True}})
    assert [(a.component, a.action, a.node or a.target) for a in acts] == [
        ("web", "deploy", "n1"), ("web", "move", "n2"), ("db", "change_spec", "n3")]


@pytest.mark.parametrize("command, message", [
    ([], "must be a mapping"),
    ({"app": "a"}, "neither 'actions'"),
    ({"app": "a", "actions": [{"action": "explode", "component": "c"}]}, "command.actions[0].action"),
    ({"app": "a", "actions": [{"action": "deploy", "component": "c"}]}, "command.actions[0].node"),
    ({"app": "a", "actions": [{"action": "move", "component": "c", "to": "n"}]}, "needs 'from' or 'instance_id'"),
    ({"name": "a", "deployment_plan": {"c": [{"action": "move", "src_host": "n1"}]}},
     "deployment_plan.c[0].target_host"),
])
def test_bad_commands_name_the_field(command, message):
    with pytest.raises(CommandError) as err:
        parse_command(command)
    assert message in str(err.value)
