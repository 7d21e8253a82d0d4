"""The web console in a real browser, for cli/tests/console.rs: Debian's chromium (never a
downloaded one) driven by playwright. Two modes:

  open  URL --quiver BIN --server ADDR --ca CA --shots DIR...
        authentication off: the console shows the topic and group the test made, then, while
        records are produced and consumed with the quiver command line, the topic's in- and
        out-rates and the group's lag change on the page without a reload; a screenshot of every
        tab.
  auth  URL --admin TOKEN --viewer TOKEN --stranger TOKEN --shots DIR...
        authentication on: no token gets 401 everywhere (the page links to /login); a token
        without describe on the cluster is refused like a wrong one; a describe-only viewer sees
        the console without write actions and the API refuses them; an admin creates and deletes
        a topic from the page.

Both fail on any error in the browser console or any uncaught page error of a signed-in page.
"""

import argparse
import json
import subprocess
import sys
import threading
import time

from playwright.sync_api import sync_playwright

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
TABS = ["topics", "groups", "queues", "plugins", "exchanges", "delayed"]
WAIT_MS = 20_000


def launch(p):
    return p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS, headless=True)


def watch(page, errors):
    """Collects console errors and uncaught exceptions of `page`."""
    page.on("console", lambda m: errors.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(f"page error: {e}"))


def shoot(page, name, dirs):
    for d in dirs:
        page.screenshot(path=f"{d}/{name}.png")


def show_tab(page, tab):
    """Opens a tab by its link (a hash change, not a reload) and waits for a poll to draw it."""
    polls = int(page.evaluate("document.body.dataset.polls || '0'"))
    page.click(f'#tabs a[data-tab="{tab}"]')
    page.wait_for_function(
        "([tab, n]) => document.body.dataset.tab === tab && Number(document.body.dataset.polls) > n",
        arg=[tab, polls],
        timeout=WAIT_MS,
    )


def number(page, selector, attribute):
    value = page.get_attribute(selector, attribute)
    return float(value) if value not in (None, "") else None


def wait_number(page, selector, attribute, test, what):
    """Waits until `test(value)` of a data attribute holds, redrawn by the page's own polling."""
    deadline = time.time() + WAIT_MS / 1000
    seen = []
    while time.time() < deadline:
        value = number(page, selector, attribute)
        seen.append(value)
        if value is not None and test(value):
            return value
        time.sleep(0.25)
    raise AssertionError(f"{what}: never happened; values seen {seen[-10:]}")


class Producer(threading.Thread):
    """Produces a small batch with the quiver command line every 300 ms until stopped."""

    def __init__(self, args, topic):
        super().__init__(daemon=True)
        self.args, self.topic, self.stop, self.count = args, topic, threading.Event(), 0

    def run(self):
        while not self.stop.is_set():
            lines = "".join(f"record-{self.count + i}\n" for i in range(20))
            quiver(self.args, ["produce", self.topic], lines)
            self.count += 20
            time.sleep(0.3)


def quiver(args, argv, stdin=""):
    env = {"QUIVER_SERVER": args.server, "QUIVER_CA": args.ca, "PATH": "/usr/bin:/bin"}
    out = subprocess.run([args.quiver, *argv], input=stdin, capture_output=True, text=True, env=env)
    if out.returncode != 0:
        raise AssertionError(f"quiver {argv}: {out.stderr}")
    return out.stdout


def open_mode(args):
    errors = []
    with sync_playwright() as p:
        browser = launch(p)
        page = browser.new_page(viewport={"width": 1280, "height": 800})
        watch(page, errors)
        page.goto(args.url + "/")
        topic_row = f'tr[data-topic="{args.topic}"]'
        page.wait_for_selector(topic_row, timeout=WAIT_MS)
        # A reload would lose this: it proves the page updated itself.
        page.evaluate("window.__sameDocument = 42")
        assert page.is_hidden("#topics-actions"), "write actions offered with authentication off"
        assert page.locator(".delete-topic").count() == 0, "delete offered with authentication off"

        show_tab(page, "groups")
        group_row = f'tr[data-group="{args.group}"]'
        page.wait_for_selector(group_row, timeout=WAIT_MS)
        lag_before = number(page, group_row + " .lag", "data-lag")
        print(f"lag before producing: {lag_before}")

        producer = Producer(args, args.topic)
        producer.start()
        try:
            lag_high = wait_number(page, group_row + " .lag", "data-lag", lambda v: v > lag_before, "the group's lag grows")
            print(f"lag while producing: {lag_high}")
            show_tab(page, "topics")
            rate = wait_number(page, topic_row + " .rate-in", "data-rate-in", lambda v: v > 0, "the topic's in-rate rises")
            print(f"in-rate while producing: {rate}/s")
            # The group reads while records keep coming: the out-rate rises too.
            consumer = threading.Thread(target=quiver, args=(args, ["consume", args.topic, "--group", args.group, "--timeout-ms", "2000"]))
            consumer.start()
            rate = wait_number(page, topic_row + " .rate-out", "data-rate-out", lambda v: v > 0, "the topic's out-rate rises")
            print(f"out-rate while consuming: {rate}/s")
            # For the screenshots in docs/: charts with more than a few seconds drawn.
            time.sleep(args.linger)
            shoot(page, "topics", args.shots)
        finally:
            producer.stop.set()
            producer.join()
        consumer.join()

        # The group read everything: its lag falls, and the page shows it without a reload.
        show_tab(page, "groups")
        lag = wait_number(page, group_row + " .lag", "data-lag", lambda v: v < lag_high, "the group's lag falls")
        print(f"lag after consuming: {lag} (was {lag_high})")
        shoot(page, "groups", args.shots)
        for tab in ["queues", "plugins", "exchanges", "delayed"]:
            show_tab(page, tab)
            shoot(page, tab, args.shots)
        check_tabs(page, args)
        assert page.evaluate("window.__sameDocument") == 42, "the page was reloaded"
        browser.close()
    assert not errors, "errors in the browser:\n" + "\n".join(errors)


def check_tabs(page, args):
    """What the test set up shows where it belongs (the page is on the delayed tab)."""
    if args.delayed:
        page.wait_for_selector(f'tr[data-delayed="{args.delayed}"]', timeout=WAIT_MS)
    if args.exchange:
        show_tab(page, "exchanges")
        page.wait_for_selector(f'tr[data-exchange="{args.exchange}"]', timeout=WAIT_MS)
    if args.hostile:
        check_hostile(page, args.hostile)
    if args.queue:
        show_tab(page, "queues")
        page.wait_for_selector(f'tr[data-queue^="{args.queue}/"]', timeout=WAIT_MS)
    if args.plugin:
        show_tab(page, "plugins")
        page.wait_for_selector(f'div[data-plugin="{args.plugin}"]', timeout=WAIT_MS)


def check_hostile(page, markup):
    """Binding keys and header values holding markup: shown as text, nothing run or inserted."""
    show_tab(page, "exchanges")
    for exchange in ["hostile", "hostile-headers"]:
        row = f'tr[data-exchange="{exchange}"]'
        page.wait_for_selector(row, timeout=WAIT_MS)
        text = page.text_content(row)
        assert markup in text, f"{exchange}: the markup is not shown as text: {text!r}"
    inserted = page.evaluate("document.querySelectorAll('#view img, #view script').length")
    assert inserted == 0, f"{inserted} elements inserted from broker data"
    ran = page.evaluate("window.__xss")
    assert ran is None, f"script from broker data ran: window.__xss = {ran}"


def sign_in(page, url, token):
    page.goto(url + "/login")
    page.fill("#token", token)
    page.click("#sign-in")


def auth_mode(args):
    errors = []
    with sync_playwright() as p:
        browser = launch(p)
        anonymous(browser, args)
        viewer(browser, args, errors)
        admin(browser, args, errors)
        browser.close()
    assert not errors, "errors in the browser:\n" + "\n".join(errors)


def anonymous(browser, args):
    """No token, a wrong one, or one without describe on the cluster: 401, nothing shown."""
    ctx = browser.new_context(viewport={"width": 1280, "height": 800})
    page = ctx.new_page()
    response = page.goto(args.url + "/")
    assert response.status == 401, f"GET / without a token: {response.status}"
    assert page.locator("#to-login").count() == 1, "the 401 page links to /login"
    for path in ["/metrics", "/healthz", "/readyz", "/api/topics", "/api/session"]:
        status = ctx.request.get(args.url + path).status
        assert status == 401, f"GET {path} without a token: {status}"
    for token in ["qvt_0000000000000000_wrong", args.stranger]:
        bearer = {"Authorization": f"Bearer {token}"}
        status = ctx.request.get(args.url + "/metrics", headers=bearer).status
        assert status == 401, f"GET /metrics with a refused token: {status}"
    status = ctx.request.get(args.url + "/metrics", headers={"Authorization": f"Bearer {args.viewer}"}).status
    assert status == 200, f"GET /metrics with the viewer's bearer token: {status}"
    sign_in(page, args.url, args.stranger)
    page.wait_for_selector("#login-error", timeout=WAIT_MS)
    shoot(page, "login", args.shots)
    ctx.close()


def viewer(browser, args, errors):
    """describe on the cluster: the console, read-only; the API refuses writes."""
    ctx = browser.new_context(viewport={"width": 1280, "height": 800})
    page = ctx.new_page()
    sign_in(page, args.url, args.viewer)
    watch(page, errors)
    page.wait_for_selector(f'tr[data-topic="{args.topic}"]', timeout=WAIT_MS)
    assert page.is_hidden("#topics-actions"), "write actions offered to a describe-only viewer"
    assert page.locator(".delete-topic").count() == 0, "delete offered to a describe-only viewer"
    who = page.text_content("#who")
    assert "read-only" in who, who
    body = json.dumps({"name": "by-viewer", "partitions": 1})
    post = ctx.request.post(args.url + "/api/topics", data=body, headers={"X-Quiver-Console": "1"})
    assert post.status == 403, f"a viewer's create: {post.status} {post.text()}"
    delete = ctx.request.delete(f"{args.url}/api/topics/{args.topic}", headers={"X-Quiver-Console": "1"})
    assert delete.status == 403, f"a viewer's delete: {delete.status} {delete.text()}"
    ctx.close()


def admin(browser, args, errors):
    """admin on the cluster: creates a topic from the page, then deletes it; signs out."""
    ctx = browser.new_context(viewport={"width": 1280, "height": 800})
    page = ctx.new_page()
    sign_in(page, args.url, args.admin)
    watch(page, errors)
    page.wait_for_selector("#create-topic", state="visible", timeout=WAIT_MS)
    forged = ctx.request.post(args.url + "/api/topics", data=json.dumps({"name": "forged"}))
    assert forged.status == 400, f"a create without X-Quiver-Console: {forged.status}"
    page.fill("#new-topic-name", "made-in-browser")
    page.fill("#new-topic-partitions", "3")
    page.click("#create-topic-submit")
    row = 'tr[data-topic="made-in-browser"]'
    page.wait_for_selector(row, timeout=WAIT_MS)
    assert page.text_content(row + " td:nth-child(2)") == "3"
    shoot(page, "admin", args.shots)
    page.on("dialog", lambda d: d.accept())
    page.click('button[data-delete="made-in-browser"]')
    page.wait_for_selector(row, state="detached", timeout=WAIT_MS)
    page.click("#logout button")
    page.wait_for_url("**/login", timeout=WAIT_MS)
    status = ctx.request.get(args.url + "/api/session").status
    assert status == 401, f"after signing out: {status}"
    ctx.close()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=["open", "auth"])
    parser.add_argument("url")
    parser.add_argument("--shots", nargs="+", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--group")
    parser.add_argument("--queue")
    parser.add_argument("--exchange")
    parser.add_argument("--delayed")
    parser.add_argument("--plugin")
    parser.add_argument("--quiver")
    parser.add_argument("--server")
    parser.add_argument("--ca")
    parser.add_argument("--admin")
    parser.add_argument("--viewer")
    parser.add_argument("--stranger")
    parser.add_argument("--hostile", help="markup the test put in binding keys and header values")
    parser.add_argument("--linger", type=float, default=0)
    args = parser.parse_args()
    started = time.time()
    (open_mode if args.mode == "open" else auth_mode)(args)
    print(f"console {args.mode}: ok in {time.time() - started:.1f}s")


if __name__ == "__main__":
    sys.exit(main())
