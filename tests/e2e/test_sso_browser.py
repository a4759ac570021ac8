"""Single sign-on, end to end, in headless Chromium (issue 4).

The six apps run under Hypercorn on ``http://<app>.localhost:<port>`` (tests/e2e/conftest.py);
Playwright drives Debian's Chromium through two browser contexts, two devices of one member:

1. device A opens blog: the silent SSO round trip finds nobody, the header offers "Sign in";
   the member signs in with a magic link (the mail is read from the test's SMTP server) and
   comes back to blog, whose header shows their name;
2. device A opens market: signed in at once, through federation, without a login page;
3. device B signs in too (magic link), blog shows the name there;
4. device A signs out on cart: cart, then blog and market show the visitor signed out;
5. device B is still signed in on blog; "Sign out everywhere" on account signs it out too.

Everything is checked in the page the member sees (the shared header: the member's name and a
"Sign out" button, or a "Sign in" link). Every wait is bounded, and so is the whole test.

Chromium in headless mode says "HeadlessChrome" in its User-Agent, which the apps rightly take
for an automated client and never send on the silent SSO round trip
(shared.infrastructure.oauth.BOT_PATTERN). A member's browser says "Chrome", so the two devices
present the User-Agent of a desktop Chrome of the same version.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable
from urllib.parse import parse_qs, urlsplit

import pytest
from playwright.async_api import Browser, Locator, Page, Request, async_playwright, expect

from tests.e2e.conftest import Inbox, Platform, launch_options

MEMBER_EMAIL = "ada@example.org"
MEMBER_NAME = "Ada Hartley"
TEST_TIMEOUT = 180.0  # seconds for all five flows, browser start and stop included
STEP_TIMEOUT_MS = 15_000  # each click, navigation and expectation in the page
SIGN_OUT_SETTLE = 5.0  # seconds another app may take to see a sign-out (back-channel)


# ---------------------------------------------------------------------------------------------
# Helpers


class Navigations:
    """The documents a page's main frame requested, redirects included, in order."""

    def __init__(self, page: Page) -> None:
        self.page = page
        self.urls: list[str] = []
        page.on("request", self.record)

    def record(self, request: Request) -> None:
        if request.is_navigation_request() and request.frame == self.page.main_frame:
            self.urls.append(request.url)

    def mark(self) -> int:
        return len(self.urls)

    def since(self, mark: int) -> list[str]:
        return self.urls[mark:]


def account_nav(page: Page) -> Locator:
    return page.locator("header.site-header .account-nav")


def sign_in_link(page: Page) -> Locator:
    return account_nav(page).get_by_role("link", name="Sign in", exact=True)


def member_link(page: Page) -> Locator:
    return account_nav(page).locator("a.member")


async def expect_signed_in(page: Page, name: str) -> None:
    await expect(member_link(page)).to_have_text(name, timeout=STEP_TIMEOUT_MS)
    await expect(account_nav(page).get_by_role("button", name="Sign out")).to_be_visible()
    await expect(sign_in_link(page)).to_have_count(0)


async def expect_signed_out(page: Page) -> None:
    await expect(sign_in_link(page)).to_be_visible(timeout=STEP_TIMEOUT_MS)
    await expect(member_link(page)).to_have_count(0)


async def open_until_signed_out(page: Page, url: str) -> int:
    """Open ``url`` (again) until its header shows the visitor signed out, within
    SIGN_OUT_SETTLE seconds; returns how many times the page was opened."""
    deadline = time.monotonic() + SIGN_OUT_SETTLE
    attempts = 0
    while True:
        attempts += 1
        await page.goto(url)
        if await sign_in_link(page).count() == 1 and await member_link(page).count() == 0:
            return attempts
        if time.monotonic() > deadline:
            shown = await account_nav(page).inner_text()
            pytest.fail(
                f"{url} still shows a member {SIGN_OUT_SETTLE} s after the sign-out: {shown!r}"
            )
        await asyncio.sleep(0.25)


def is_at(url: str, base: str, path: str) -> bool:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}" == base and parts.path == path


def url_is(base: str, path: str) -> Callable[[str], bool]:
    return lambda url: is_at(url, base, path)


def silent_attempts(urls: list[str], federation: str) -> list[str]:
    """The prompt=none authorization requests among ``urls``."""
    return [
        url
        for url in urls
        if is_at(url, federation, "/oauth/authorize")
        and parse_qs(urlsplit(url).query).get("prompt") == ["none"]
    ]


def desktop_user_agent(browser: Browser, platform: str) -> str:
    major = browser.version.split(".")[0]
    return (
        f"Mozilla/5.0 ({platform}) AppleWebKit/537.36 (KHTML, like Gecko) "
        f"Chrome/{major}.0.0.0 Safari/537.36"
    )


async def new_device(browser: Browser, platform: str) -> tuple[Page, Navigations]:
    context = await browser.new_context(user_agent=desktop_user_agent(browser, platform))
    context.set_default_timeout(STEP_TIMEOUT_MS)
    context.set_default_navigation_timeout(STEP_TIMEOUT_MS)
    page = await context.new_page()
    return page, Navigations(page)


async def sign_in_by_mail(page: Page, platform: Platform, inbox: Inbox, email: str) -> str:
    """From an app page showing "Sign in": federation's form, the mail, its link, the button.
    Returns the link that was mailed."""
    federation = platform.urls["federation"]
    await sign_in_link(page).click()
    await page.wait_for_url(url_is(federation, "/login"))
    await expect(page.get_by_role("heading", name="Sign in to Rose Ash")).to_be_visible()
    form = page.locator("form.login-link")
    await form.get_by_label("Email address").fill(email)
    before = inbox.count()
    await form.get_by_role("button", name="Send me a link").click()
    await expect(page.get_by_role("heading", name="Check your mail")).to_be_visible()
    await expect(page.locator("main")).to_contain_text(email)

    mail = await inbox.wait_for(email, after=before)
    assert mail["Subject"] == "Your Rose Ash sign-in link"
    body = mail.get_body(preferencelist=("plain",))
    assert body is not None
    found = re.search(re.escape(federation) + r"/login/magic/[A-Za-z0-9_\-]+", body.get_content())
    assert found, f"no sign-in link in the mail:\n{body.get_content()}"
    link = found.group(0)

    await page.goto(link)
    await expect(page.get_by_role("heading", name="Sign in to Rose Ash")).to_be_visible()
    await page.locator("main form").get_by_role("button", name="Sign in", exact=True).click()
    return link


# ---------------------------------------------------------------------------------------------
# The test


async def test_single_sign_on_across_apps_and_devices(
    chromium_path: str, platform: Platform, inbox: Inbox
) -> None:
    # chromium_path first: a machine without Chromium fails before six servers start.
    urls = platform.urls  # app name -> http://<app>.localhost:<port>
    blog, market, cart = urls["blog"], urls["market"], urls["cart"]
    account, federation = urls["account"], urls["federation"]
    member = await platform.create_member(MEMBER_EMAIL, MEMBER_NAME)
    assert member.name == MEMBER_NAME
    timings: dict[str, float] = {}
    started = time.monotonic()

    def lap(step: str, since: float) -> float:
        now = time.monotonic()
        timings[step] = now - since
        return now

    async with asyncio.timeout(TEST_TIMEOUT), async_playwright() as playwright:
        browser = await playwright.chromium.launch(**launch_options(chromium_path))
        try:
            t = lap("launch Chromium", started)
            a, a_navigations = await new_device(browser, "X11; Linux x86_64")
            b, b_navigations = await new_device(browser, "Windows NT 10.0; Win64; x64")

            # 1. Device A: blog, nobody signed in; sign in there with a magic link.
            mark = a_navigations.mark()
            await a.goto(f"{blog}/")
            assert is_at(a.url, blog, "/"), a.url
            await expect_signed_out(a)
            assert silent_attempts(a_navigations.since(mark), federation), (
                "blog did not try the silent SSO round trip",
                a_navigations.since(mark),
            )
            await sign_in_by_mail(a, platform, inbox, MEMBER_EMAIL)
            await a.wait_for_url(url_is(blog, "/"))
            await expect_signed_in(a, MEMBER_NAME)
            t = lap("1. device A signs in on blog by magic link", t)

            # 2. Device A: market knows the member at once, through federation, no login page.
            mark = a_navigations.mark()
            await a.goto(f"{market}/")
            await expect_signed_in(a, MEMBER_NAME)
            went = a_navigations.since(mark)
            assert is_at(a.url, market, "/"), a.url
            assert silent_attempts(went, federation), ("no silent SSO round trip", went)
            assert any(is_at(url, market, "/auth/callback") for url in went), went
            assert not [url for url in went if urlsplit(url).path.startswith("/login")], went
            await expect(a.locator("input[type=email]")).to_have_count(0)
            t = lap("2. device A opens market: signed in without a login page", t)

            # 3. Device B: the same member signs in there too.
            mark = b_navigations.mark()
            await b.goto(f"{blog}/")
            await expect_signed_out(b)
            assert silent_attempts(b_navigations.since(mark), federation)
            await sign_in_by_mail(b, platform, inbox, MEMBER_EMAIL)
            await b.wait_for_url(url_is(blog, "/"))
            await expect_signed_in(b, MEMBER_NAME)
            t = lap("3. device B signs in on blog by magic link", t)

            # 4. Device A signs out on cart: cart, blog and market show it signed out.
            await a.goto(f"{cart}/")
            await expect_signed_in(a, MEMBER_NAME)  # silent SSO signed it in on cart
            await account_nav(a).get_by_role("button", name="Sign out").click()
            await a.wait_for_url(url_is(cart, "/"))
            await expect_signed_out(a)
            blog_attempts = await open_until_signed_out(a, f"{blog}/")
            await expect_signed_out(a)
            market_attempts = await open_until_signed_out(a, f"{market}/")
            await expect_signed_out(a)
            t = lap("4. device A signs out on cart; blog and market follow", t)

            # 5. Device B is still signed in; "Sign out everywhere" on account ends that too.
            await b.reload()
            await expect_signed_in(b, MEMBER_NAME)
            await b.goto(f"{account}/")
            await expect_signed_in(b, MEMBER_NAME)
            await expect(b.get_by_role("heading", name="Your account")).to_be_visible()
            devices = b.locator("ul.devices li.device")
            await expect(devices).to_have_count(1)  # device A is signed out already
            await expect(devices.first).to_contain_text("(this device)")
            await b.get_by_role("button", name="Sign out everywhere").click()
            await b.wait_for_url(url_is(account, "/"))
            await expect_signed_out(b)
            everywhere_attempts = await open_until_signed_out(b, f"{blog}/")
            await expect_signed_out(b)
            await b.goto(f"{market}/")
            await expect_signed_out(b)
            lap("5. device B stays signed in until 'sign out everywhere'", t)
        except Exception:
            # The apps' own account of what happened, shown with the failure.
            print(f"\nwhere the flows stood: {timings}\n{platform.log_tails()}")
            raise
        finally:
            await browser.close()

    timings["total (Chromium start to close)"] = time.monotonic() - started
    print("\nSSO browser flows (seconds):")
    for step, seconds in timings.items():
        print(f"  {seconds:6.2f}  {step}")
    print(
        f"  page loads until signed out: blog {blog_attempts}, market {market_attempts} "
        f"(after sign-out on cart), blog {everywhere_attempts} (after sign out everywhere)"
    )
