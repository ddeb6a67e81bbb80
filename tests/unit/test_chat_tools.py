"""What a request's tools ask of a transformers generation (no model needed)."""

from __future__ import annotations

import pytest

from modelport.errors import InvalidRequestError
from modelport.protocol import ChatCompletionRequest, ChatMessage
from modelport.tools.support import HERMES, JSON, ToolSupport
from modelport.workers.chat_tools import forced_continuations, plan_tools, template_message

WEATHER = {"type": "function", "function": {"name": "get_weather", "parameters": {
    "type": "object", "properties": {"unit": {"type": "string"}, "days": {"type": "integer"}},
    "required": ["days"]}}}
PING = {"type": "function", "function": {"name": "ping"}}
CAN = ToolSupport(HERMES, "renders tools")


def request(**fields):
    return ChatCompletionRequest.model_validate(
        {"model": "m", "messages": [{"role": "user", "content": "hi"}],
         "tools": [WEATHER, PING], **fields})


def test_no_plan_without_tools_or_with_tool_choice_none():
    assert plan_tools(request(tools=None), "m", CAN) is None
    assert plan_tools(request(tool_choice="none"), "m", ToolSupport(None, "x")) is None


def test_a_template_that_cannot_is_a_400_with_the_reason():
    with pytest.raises(InvalidRequestError) as caught:
        plan_tools(request(), "hf", ToolSupport(None, "its template ignores tools"))
    assert caught.value.message == "model 'hf' cannot call tools: its template ignores tools"
    assert caught.value.param == "tools"


def test_auto_is_free_and_parallel_tool_calls_false_ends_at_the_first_call():
    free = plan_tools(request(), "m", CAN)
    assert free.forced == () and free.opening == "" and not free.one_call
    assert plan_tools(request(parallel_tool_calls=False), "m", CAN).one_call


def test_required_opens_the_call_and_allows_every_offered_name():
    plan = plan_tools(request(tool_choice="required"), "m", CAN)
    assert plan.forced == ("get_weather", "ping") and plan.one_call
    assert plan.opening == '<tool_call>\n{"name": "'
    # The first required argument's key is forced too; a tool without arguments is not.
    assert forced_continuations(plan) == ['get_weather", "arguments": {"days": ',
                                          'ping", "arguments": ']


def test_named_choice_in_the_llama3_form_uses_parameters():
    named = request(tool_choice={"type": "function", "function": {"name": "get_weather"}})
    plan = plan_tools(named, "m", ToolSupport(JSON, "renders tools"))
    assert plan.opening == '{"name": "' and plan.forced == ("get_weather",)
    assert forced_continuations(plan) == ['get_weather", "parameters": {"days": ']


def test_a_string_first_argument_opens_its_quote():
    tool = {"type": "function", "function": {"name": "f", "parameters": {
        "type": "object", "properties": {"city": {"type": "string"}}}}}
    plan = plan_tools(request(tools=[tool], tool_choice="required"), "m", CAN)
    assert forced_continuations(plan) == ['f", "arguments": {"city": "']


def test_messages_reach_the_template_with_arguments_as_a_mapping():
    message = ChatMessage.model_validate({"role": "assistant", "content": None, "tool_calls": [
        {"id": "call_1", "type": "function",
         "function": {"name": "get_weather", "arguments": '{"days": 2}'}}]})
    rendered = template_message(message)
    assert rendered["tool_calls"][0]["function"] == {"name": "get_weather",
                                                     "arguments": {"days": 2}}
    result = template_message(ChatMessage.model_validate(
        {"role": "tool", "tool_call_id": "call_1", "content": "sunny"}))
    assert result == {"role": "tool", "content": "sunny", "tool_call_id": "call_1"}
