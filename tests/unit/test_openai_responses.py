"""The Responses API translation: requests to chat bodies, chat answers and chunk streams to
response objects and events, checked against the official SDK's own parsing."""

from __future__ import annotations

import httpx
import orjson
import pytest
from openai import OpenAI

from modelport.errors import InvalidRequestError, UpstreamError
from modelport.foreign.openai_responses import (
    ResponseEvents,
    chat_body,
    conversation_items,
    input_items,
    response_from_chat,
    response_shell,
    sse_frame,
)
from modelport.foreign.openai_responses_schema import ResponsesRequest, unsupported_feature
from modelport.protocol import ChatCompletionRequest, validate_request

WEATHER = {"type": "function", "name": "get_weather", "description": "Weather of a city",
           "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                          "required": ["city"]}, "strict": True}


def request(**fields) -> ResponsesRequest:
    return validate_request(ResponsesRequest, {"model": "m", **fields})


def translated(**fields) -> dict:
    body = chat_body(request(**fields))
    validate_request(ChatCompletionRequest, body)  # the chat path must accept what we built
    return body


# ------------------------------------------------------------------ requests


def test_string_input_with_instructions_becomes_system_and_user_messages():
    body = translated(input="Hi there", instructions="Be brief.", max_output_tokens=7,
                      temperature=0.2, top_p=0.9, user="u1")
    assert body["messages"] == [{"role": "system", "content": "Be brief."},
                                {"role": "user", "content": "Hi there"}]
    assert (body["max_tokens"], body["temperature"], body["top_p"], body["user"]) == (7, 0.2, 0.9, "u1")
    assert "stream" not in body and "tools" not in body


def test_message_items_map_roles_and_content_parts():
    body = translated(input=[
        {"role": "developer", "content": "Rules."},
        {"type": "message", "role": "user", "content": [
            {"type": "input_text", "text": "Look:"},
            {"type": "input_image", "image_url": "data:image/png;base64,AAAA", "detail": "low"}]},
        {"type": "message", "role": "assistant", "id": "msg_1", "status": "completed",
         "content": [{"type": "output_text", "text": "A ", "annotations": []},
                     {"type": "output_text", "text": "cat.", "annotations": []}]},
        {"role": "user", "content": [{"type": "input_text", "text": "Sure?"}]},
    ])
    assert body["messages"] == [
        {"role": "system", "content": "Rules."},
        {"role": "user", "content": [
            {"type": "text", "text": "Look:"},
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA",
                                                "detail": "low"}}]},
        {"role": "assistant", "content": "A cat."},
        {"role": "user", "content": "Sure?"},
    ]


def test_function_tools_tool_choice_and_text_format_take_the_chat_shapes():
    body = translated(input="Weather in Paris?", tools=[WEATHER],
                      tool_choice={"type": "function", "name": "get_weather"},
                      parallel_tool_calls=False, stream=True,
                      text={"format": {"type": "json_schema", "name": "answer", "strict": True,
                                       "schema": {"type": "object"}}})
    assert body["tools"] == [{"type": "function", "function": {
        "name": "get_weather", "description": "Weather of a city",
        "parameters": WEATHER["parameters"], "strict": True}}]
    assert body["tool_choice"] == {"type": "function", "function": {"name": "get_weather"}}
    assert body["parallel_tool_calls"] is False and body["stream"] is True
    assert body["response_format"] == {"type": "json_schema", "json_schema": {
        "name": "answer", "schema": {"type": "object"}, "strict": True}}
    assert translated(input="x", text={"format": {"type": "json_object"}})["response_format"] \
        == {"type": "json_object"}
    assert "response_format" not in translated(input="x", text={"format": {"type": "text"}})
    assert translated(input="x", tools=[WEATHER], tool_choice="required")["tool_choice"] \
        == "required"


def test_function_calls_and_their_outputs_become_tool_calls_and_tool_messages():
    body = translated(input=[
        {"role": "user", "content": "Weather in Paris and Rome?"},
        {"type": "message", "role": "assistant", "content": "Checking."},
        {"type": "function_call", "call_id": "c1", "name": "get_weather",
         "arguments": '{"city":"Paris"}', "id": "fc_1", "status": "completed"},
        {"type": "function_call", "call_id": "c2", "name": "get_weather",
         "arguments": '{"city":"Rome"}'},
        {"type": "function_call_output", "call_id": "c1", "output": "sunny"},
        {"type": "function_call_output", "call_id": "c2",
         "output": [{"type": "input_text", "text": "rain"}]},
    ], tools=[WEATHER])
    assert body["messages"][1:] == [
        {"role": "assistant", "content": "Checking.", "tool_calls": [
            {"id": "c1", "type": "function",
             "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'}},
            {"id": "c2", "type": "function",
             "function": {"name": "get_weather", "arguments": '{"city":"Rome"}'}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "sunny"},
        {"role": "tool", "tool_call_id": "c2", "content": "rain"},
    ]


def test_a_function_call_output_without_its_call_is_refused_by_input_index():
    with pytest.raises(InvalidRequestError) as caught:
        chat_body(request(input=[{"role": "user", "content": "hi"},
                                 {"type": "function_call_output", "call_id": "nope",
                                  "output": "x"}]))
    assert caught.value.param == "input[1].call_id" and "nope" in caught.value.message


def test_history_from_a_previous_response_comes_first_and_errors_name_the_new_input():
    first = request(input="My name is Ada.", instructions="Old rules.")
    answered = response_from_chat(response_shell(first, model="m"), completion("Hello Ada."))
    history = conversation_items(input_items(first), answered)
    follow_up = request(input="What is my name?", previous_response_id=answered["id"],
                        instructions="New rules.")
    assert chat_body(follow_up, history)["messages"] == [
        {"role": "system", "content": "New rules."},
        {"role": "user", "content": "My name is Ada."},
        {"role": "assistant", "content": "Hello Ada."},
        {"role": "user", "content": "What is my name?"},
    ]
    orphan = request(input=[{"type": "function_call_output", "call_id": "x", "output": "1"}])
    with pytest.raises(InvalidRequestError) as caught:
        chat_body(orphan, history)
    assert caught.value.param == "input[0].call_id"


def test_an_input_of_only_instructions_has_nothing_to_answer():
    with pytest.raises(InvalidRequestError) as caught:
        chat_body(request(input=[{"role": "system", "content": "Rules only."}]))
    assert caught.value.param == "input"


@pytest.mark.parametrize("fields, param", [
    ({"tools": [{"type": "web_search_preview"}]}, "tools[0].type"),
    ({"tool_choice": {"type": "file_search"}}, "tool_choice.type"),
    ({"input": [{"role": "user", "content": "a"}, {"type": "reasoning", "summary": []}]},
     "input[1].type"),
    ({"input": [{"type": "item_reference", "id": "msg_1"}]}, "input[0].type"),
    ({"input": [{"role": "user", "content": [{"type": "input_image", "file_id": "f1"}]}]},
     "input[0].content[0].file_id"),
    ({"background": True}, "background"),
    ({"reasoning": {"effort": "high"}}, "reasoning"),
    ({"include": ["message.output_text.logprobs"]}, "include"),
    ({"truncation": "auto"}, "truncation"),
    ({"conversation": "conv_1"}, "conversation"),
])
def test_features_that_would_change_the_answer_are_refused_by_name(fields, param):
    error = unsupported_feature({"model": "m", "input": "x", **fields})
    assert error is not None and error.status == 400 and error.param == param
    assert "does not support" in error.message


def test_defaults_and_empty_options_are_not_refused():
    assert unsupported_feature({"model": "m", "input": "x", "reasoning": {"effort": None},
                                "include": ["reasoning.encrypted_content"],
                                "truncation": "disabled", "background": False,
                                "store": False, "metadata": {"a": "b"},
                                "service_tier": "auto"}) is None


@pytest.mark.parametrize("fields, param", [
    ({"input": 3}, "input"),
    ({"input": [{"role": "robot", "content": "x"}]}, "input[0].role"),
    ({"input": [{"type": "function_call", "call_id": "c", "arguments": "{}"}]}, "input[0].name"),
    ({"input": "x", "tool_choice": "required"}, None),
    ({"input": "x", "tools": [WEATHER], "tool_choice": {"type": "function", "name": "other"}},
     None),
    ({"input": "x", "max_output_tokens": 0}, "max_output_tokens"),
    ({"input": "x", "text": {"format": {"type": "json_schema", "schema": {}}}},
     "text.format.name"),
    ({"input": ""}, "input"),
    ({"input": []}, "input"),
])
def test_bad_request_shapes_are_400s_naming_the_param(fields, param):
    with pytest.raises(InvalidRequestError) as caught:
        request(**fields)
    assert caught.value.param == param, caught.value.message


# ------------------------------------------------------------------ answers


def completion(content, *, calls=None, finish="stop", usage=(12, 5)) -> dict:
    message = {"role": "assistant", "content": content}
    if calls:
        message["tool_calls"] = [{"id": call_id, "type": "function",
                                  "function": {"name": name, "arguments": arguments}}
                                 for call_id, name, arguments in calls]
    return {"id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "served",
            "choices": [{"index": 0, "message": message, "finish_reason": finish}],
            "usage": {"prompt_tokens": usage[0], "completion_tokens": usage[1],
                      "total_tokens": sum(usage)}}


def sdk_client(handler) -> OpenAI:
    return OpenAI(base_url="http://test/v1", api_key="k", max_retries=0,
                  http_client=httpx.Client(transport=httpx.MockTransport(handler)))


def test_a_text_answer_is_a_response_the_sdk_reads():
    shell = response_shell(request(input="hi", metadata={"k": "v"}), model="served")
    answer = response_from_chat(shell, completion("Hello!"))
    client = sdk_client(lambda _: httpx.Response(200, json=answer))
    response = client.responses.create(model="m", input="hi")
    assert response.id.startswith("resp_") and response.object == "response"
    assert response.status == "completed" and response.incomplete_details is None
    assert response.output_text == "Hello!"
    assert response.output[0].content[0].annotations == []
    assert response.model == "served" and response.metadata == {"k": "v"}
    assert (response.usage.input_tokens, response.usage.output_tokens,
            response.usage.total_tokens) == (12, 5, 17)
    assert response.usage.input_tokens_details.cached_tokens == 0
    assert response.usage.output_tokens_details.reasoning_tokens == 0


def test_tool_calls_become_function_call_items_and_max_tokens_makes_it_incomplete():
    shell = response_shell(request(input="w", tools=[WEATHER]), model="served")
    answer = response_from_chat(shell, completion(
        None, calls=[("call_9", "get_weather", '{"city":"Paris"}')], finish="tool_calls"))
    assert [item["type"] for item in answer["output"]] == ["function_call"]
    call = answer["output"][0]
    assert call["id"].startswith("fc_") and call["call_id"] == "call_9"
    assert (call["name"], call["arguments"], call["status"]) == (
        "get_weather", '{"city":"Paris"}', "completed")
    cut = response_from_chat(shell, completion("Once upon", finish="length"))
    assert cut["status"] == "incomplete"
    assert cut["incomplete_details"] == {"reason": "max_output_tokens"}
    assert cut["output"][0]["status"] == "incomplete"


# ------------------------------------------------------------------ streams


def chunk(delta=None, finish=None, usage=None) -> dict:
    choices = [] if delta is None else [{"index": 0, "delta": delta, "finish_reason": finish}]
    data = {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "served",
            "choices": choices}
    if usage is not None:
        data["usage"] = usage
    return data


USAGE = {"prompt_tokens": 9, "completion_tokens": 3, "total_tokens": 12}


def stream_events(chunks, *, error=None, **fields) -> list[dict]:
    translator = ResponseEvents(response_shell(request(input="hi", **fields), model="served"))
    events = translator.start()
    for data in chunks:
        events += translator.feed(data)
    events += translator.fail(error) if error else translator.finish()
    return events


def sdk_stream(events, **create_fields):
    body = b"".join(sse_frame(event) for event in events)
    client = sdk_client(lambda _: httpx.Response(
        200, content=body, headers={"content-type": "text/event-stream"}))
    return client.responses.stream(model="m", input="hi", **create_fields)


def test_a_text_stream_is_the_event_sequence_the_sdk_assembles():
    events = stream_events([chunk({"role": "assistant", "content": ""}),
                            chunk({"content": "Hel"}), chunk({"content": "lo"}),
                            chunk({}, "stop"), chunk(usage=USAGE)])
    assert [event["type"] for event in events] == [
        "response.created", "response.in_progress", "response.output_item.added",
        "response.content_part.added", "response.output_text.delta",
        "response.output_text.delta", "response.output_text.done",
        "response.content_part.done", "response.output_item.done", "response.completed"]
    assert [event["sequence_number"] for event in events] == list(range(len(events)))
    assert events[0]["response"]["output"] == [] and events[0]["response"]["status"] == "in_progress"
    with sdk_stream(events) as stream:
        deltas = [event.delta for event in stream if event.type == "response.output_text.delta"]
        final = stream.get_final_response()
    assert deltas == ["Hel", "lo"]
    assert final.output_text == "Hello" and final.status == "completed"
    assert final.usage.input_tokens == 9 and final.usage.output_tokens == 3


def test_a_tool_call_stream_has_function_call_items_with_argument_deltas():
    events = stream_events([
        chunk({"role": "assistant", "content": None}),
        chunk({"tool_calls": [{"index": 0, "id": "call_1", "type": "function",
                               "function": {"name": "get_weather", "arguments": ""}}]}),
        chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"city":'}}]}),
        chunk({"tool_calls": [{"index": 0, "function": {"arguments": '"Paris"}'}}]}),
        chunk({}, "tool_calls"), chunk(usage=USAGE)], tools=[WEATHER])
    kinds = [event["type"] for event in events]
    assert kinds == ["response.created", "response.in_progress", "response.output_item.added",
                     "response.function_call_arguments.delta",
                     "response.function_call_arguments.delta",
                     "response.function_call_arguments.done", "response.output_item.done",
                     "response.completed"]
    added = events[2]["item"]
    assert (added["type"], added["call_id"], added["name"], added["arguments"]) == (
        "function_call", "call_1", "get_weather", "")
    with sdk_stream(events, tools=[WEATHER]) as stream:
        snapshots = [event.snapshot for event in stream
                     if event.type == "response.function_call_arguments.delta"]
        final = stream.get_final_response()
    assert snapshots == ['{"city":', '{"city":"Paris"}']
    call = final.output[0]
    assert call.type == "function_call" and call.parsed_arguments == {"city": "Paris"}


def test_text_then_a_tool_call_closes_the_message_before_the_call_starts():
    events = stream_events([
        chunk({"content": "Let me check."}),
        chunk({"tool_calls": [{"index": 0, "id": "call_1", "type": "function",
                               "function": {"name": "get_weather", "arguments": "{}"}}]}),
        chunk({}, "tool_calls"), chunk(usage=USAGE)], tools=[WEATHER])
    kinds = [event["type"] for event in events]
    assert kinds.index("response.output_item.done") < kinds.index("response.function_call_arguments.delta")
    final = events[-1]["response"]
    assert [item["type"] for item in final["output"]] == ["message", "function_call"]
    with sdk_stream(events, tools=[WEATHER]) as stream:
        assert stream.get_final_response().output_text == "Let me check."


def test_a_stream_cut_by_max_tokens_ends_incomplete():
    events = stream_events([chunk({"content": "Once"}), chunk({}, "length"), chunk(usage=USAGE)],
                           max_output_tokens=1)
    assert events[-1]["type"] == "response.incomplete"
    assert events[-1]["response"]["incomplete_details"] == {"reason": "max_output_tokens"}
    assert events[-2]["item"]["status"] == "incomplete"
    with sdk_stream(events) as stream:
        kinds = [event.type for event in stream]
    assert kinds[-1] == "response.incomplete"


def test_a_stream_without_any_text_still_has_its_empty_message():
    events = stream_events([chunk({}, "stop"), chunk(usage=USAGE)])
    assert events[-1]["response"]["output"][0]["content"][0]["text"] == ""
    with sdk_stream(events) as stream:
        assert stream.get_final_response().output_text == ""


def test_a_stream_that_breaks_off_ends_with_an_error_and_a_failed_response():
    events = stream_events([chunk({"content": "Half"})],
                           error=UpstreamError("model crashed", status=502))
    assert [event["type"] for event in events[-2:]] == ["error", "response.failed"]
    assert events[-2]["message"] == "model crashed"
    failed = events[-1]["response"]
    assert failed["status"] == "failed"
    assert failed["error"] == {"code": "server_error", "message": "model crashed"}
    assert [event["sequence_number"] for event in events] == list(range(len(events)))
    with sdk_stream(events) as stream:
        kinds = [event.type for event in stream]
    assert kinds[-2:] == ["error", "response.failed"]


def test_sse_frames_name_the_event():
    frame = sse_frame({"type": "response.created", "sequence_number": 0})
    assert frame.startswith(b"event: response.created\ndata: ") and frame.endswith(b"\n\n")
    assert orjson.loads(frame.split(b"data: ", 1)[1]) == {"type": "response.created",
                                                         "sequence_number": 0}
