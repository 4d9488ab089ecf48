"""Traces carry the message: the Chrome export's flows and instants and the Mermaid
diagram give the label (named for the kernel's protocols), the words, map items and what
landed, string bytes and errors; Mermaid is cut with a note."""

from __future__ import annotations

from typing import Any

from l4sim import Fpage, Kernel, MapItem, Rights, StringItem, Timeout
from l4sim.trace import messages, to_chrome, to_mermaid

SHARE = 3


def shared_page_kernel() -> Kernel:
    async def producer(t: Any, consumer: int) -> None:
        await t.store(0x10000, b"hello")                      # a page fault first
        await t.send(consumer, words=[5, 6], label=SHARE,
                     items=[MapItem(Fpage.mem(0x10000, 12, Rights.R))])

    async def consumer(t: Any) -> bytes:
        await t.wait(window=Fpage.mem(0x800000, 12))
        return bytes(await t.load(0x800000, 5))

    k = Kernel(trace=True, check=True)
    k.new_task("consumer").new_thread(consumer, name="consumer", priority=110)
    p = k.new_task("producer")
    p.new_thread(producer, p.add_cap(k.threads[1]), name="producer")
    k.run()
    return k


def test_messages_know_label_words_protocol_and_what_landed() -> None:
    k = shared_page_kernel()
    msgs = messages(k.events)
    fault = msgs[0]
    assert (fault.sender, fault.receiver, fault.kind, fault.protocol) == (
        "producer", "anon-pager", "call", "page fault")
    assert fault.label == -2 and fault.values[0] == 0x10000 | 2  # address | write bit
    share = msgs[-1]
    assert (share.label, share.values, share.items) == (SHARE, (5, 6), 1)
    assert share.maps == ("map mem 0x10000/12 0x4 -> mem 0x800000/12 0x4",)
    assert any(m.protocol == "sigma0" for m in msgs)


def test_chrome_flows_and_instants_carry_the_message() -> None:
    doc = to_chrome(shared_page_kernel())
    flows = [e for e in doc["traceEvents"] if e["ph"] == "s"]
    assert flows[0]["args"]["protocol"] == "page fault"
    last = flows[-1]["args"]
    assert last["label"] == SHARE and last["values"] == [5, 6] and last["items"] == 1
    assert last["maps"] == ["map mem 0x10000/12 0x4 -> mem 0x800000/12 0x4"]
    names = [e["name"] for e in doc["traceEvents"] if e.get("cat") == "message"]
    assert "send label 3(5, 6) → consumer" in names and "send label 3(5, 6) ← producer" in names
    kernel = {e["name"] for e in doc["traceEvents"] if e.get("cat") == "kernel"}
    assert {"page fault", "map"} <= kernel


def test_mermaid_names_labels_words_faults_and_maps() -> None:
    text = to_mermaid(shared_page_kernel(), labels={SHARE: "SHARE"})
    assert "producer->>p4: page fault write 0x10000" in text   # p4: anon-pager's alias
    assert "producer->>consumer: send SHARE(5, 6)" in text
    assert "Note over consumer: map 0x10000 4 KiB r-- landed at 0x800000" in text
    assert "Note over producer: map 0x400000000000 4 KiB rwx landed at 0x10000" in text


def test_long_ipc_carries_string_bytes_and_errors_are_instants() -> None:
    async def server(t: Any) -> None:
        await t.wait(buffers=[(0x200000, 100)])             # too small: a message cut

    async def client(t: Any, srv: int) -> None:
        await t.store(0x10000, bytes(300))
        await t.send(srv, items=[StringItem(0x10000, 300)])
        await t.sleep(Timeout.us(1))

    k = Kernel(trace=True, check=True)
    srv = k.new_task("server").new_thread(server, name="server", priority=110)
    c = k.new_task("client")
    c.new_thread(client, c.add_cap(srv), name="client")
    k.run()
    (msg,) = [m for m in messages(k.events) if m.receiver == "server"]
    assert msg.strings == (100,) and msg.error == "SEMSGCUT"
    assert "client->>server: send() + 100 B [SEMSGCUT]" in to_mermaid(k)
    errors = [(e["args"]["detail"]) for e in to_chrome(k)["traceEvents"]
              if e.get("cat") == "kernel" and e["name"] == "error"]
    assert {"SEMSGCUT", "REMSGCUT", "RETIMEOUT"} <= set(errors)


def test_mermaid_limit_says_what_was_cut() -> None:
    k = shared_page_kernel()
    n = len(messages(k.events))
    text = to_mermaid(k, limit=2)
    assert text.count("->>") == 2
    assert f"{n - 2} more messages" in text and "--mermaid-limit N" in text


def test_report_of_a_long_run_shows_its_end_only() -> None:
    from l4sim.trace import html

    async def ping(t: Any, srv: int) -> None:
        while True:
            await t.call(srv, words=[1])

    async def pong(t: Any) -> None:
        await t.wait()
        while True:
            await t.reply_and_wait(words=[2])

    k = Kernel(trace=True)
    s = k.new_task("s").new_thread(pong, name="pong")
    c = k.new_task("c")
    c.new_thread(ping, c.add_cap(s), name="ping")
    res = k.run(until=k.ms(5))
    data = html.report_data(k, res)
    assert len(data["messages"]) == html.MAX_MESSAGES
    assert data["start_us"] > 0 and all(m["t"] >= data["start_us"] for m in data["messages"])
    assert len(data["slices"]) <= html.MAX_SLICES + 2 * len(data["threads"])
    assert "the timeline shows the run from" in html.report_html(k, res)
