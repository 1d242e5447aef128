"""The web console in a real headless browser (Debian's chromium through chromium-driver): sign in,
run the Bell sampler, watch it reach DONE live, see its histogram, cancel a long job. Screenshots go
to test-artifacts/console/ (or $QRUNTIME_TEST_ARTIFACTS)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import httpx
import pytest

pytestmark = pytest.mark.slow  # a suite and a browser

CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")
ARTIFACTS = Path(os.environ.get("QRUNTIME_TEST_ARTIFACTS", Path(__file__).parents[2] / "test-artifacts")) / "console"
if not (CHROMIUM and CHROMEDRIVER):
    pytest.skip("needs chromium and chromium-driver (scripts/setup.sh installs them as root)", allow_module_level=True)

from selenium import webdriver  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support import expected_conditions as ec  # noqa: E402
from selenium.webdriver.support.select import Select  # noqa: E402
from selenium.webdriver.support.wait import WebDriverWait  # noqa: E402

# Records every state the open job shows, as the page changes it (not by reloading).
RECORD_STATES = """
window.seenStates = [];
new MutationObserver(() => {
  const el = document.getElementById('job-state');
  const text = el && el.textContent;
  if (text && window.seenStates[window.seenStates.length - 1] !== text) window.seenStates.push(text);
}).observe(document.body, {subtree: true, childList: true, characterData: true, attributes: true});
"""


@pytest.fixture
def browser():
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,1000"):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    try:
        yield driver
    finally:
        driver.quit()


def wait_for_state(driver, state: str, timeout: float = 60) -> None:
    WebDriverWait(driver, timeout).until(ec.text_to_be_present_in_element((By.ID, "job-state"), state))


def run_example(driver, example: str, backend: str = "ibmq_qasm_simulator") -> None:
    Select(driver.find_element(By.ID, "example")).select_by_value(example)
    Select(driver.find_element(By.ID, "job-backend")).select_by_value(backend)
    driver.find_element(By.ID, "run-job").click()


def row_of(driver, text: str):
    return driver.find_element(By.XPATH, f"//table[@id='list']//tr[td[normalize-space()='{text}']]")


def act_on(driver, text: str, action: str, confirm: bool = False) -> None:
    """Click a row's action (the row with a cell reading text); the confirmation shows, and with
    confirm=True is accepted."""
    WebDriverWait(driver, 30).until(lambda d: row_of(d, text))
    row_of(driver, text).find_element(By.CSS_SELECTOR, f"button[data-action={action}]").click()
    WebDriverWait(driver, 10).until(ec.visibility_of_element_located((By.ID, "confirm")))
    if confirm:
        driver.find_element(By.ID, "confirm-action").click()


def create_in(driver, listing: str, values: dict[str, str]) -> None:
    """Fill the create form of an admin list and wait for the new row."""
    driver.find_element(By.ID, f"list-{listing}").click()
    for name, value in values.items():
        field = WebDriverWait(driver, 30).until(
            ec.visibility_of_element_located((By.CSS_SELECTOR, f"#create-form input[name='{name}']")))
        field.send_keys(value)
    driver.find_element(By.CSS_SELECTOR, "#create-form button").click()
    WebDriverWait(driver, 30).until(lambda d: d.find_element(By.ID, "created").text)


def admin_get(rest, path: str) -> dict:
    """What the API says, as the account's owner."""
    response = httpx.get(f"{rest.url}{path}", headers={"Authorization": f"Bearer {rest.token()}"})
    assert response.status_code == 200, response.text
    return response.json()


def test_sign_in_run_bell_watch_it_live_see_the_histogram_and_cancel_a_long_job(rest, browser):
    wait = WebDriverWait(browser, 30)
    browser.get(f"{rest.url}/console/")
    browser.find_element(By.NAME, "apikey").send_keys(rest.suite.api_key)
    browser.find_element(By.NAME, "instance").send_keys("lite")  # by name; the CRN works too
    browser.save_screenshot(str(ARTIFACTS / "1-sign-in.png"))
    browser.find_element(By.CSS_SELECTOR, "#sign-in button").click()
    wait.until(ec.visibility_of_element_located((By.ID, "new-job")))
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#job-backend option[value=ibmq_qasm_simulator]"))

    browser.execute_script(RECORD_STATES)
    run_example(browser, "bell")
    wait_for_state(browser, "DONE")
    seen = browser.execute_script("return window.seenStates")
    assert seen[-1] == "DONE", seen  # a quick job (jobs/quick.py): maybe DONE when created
    bars = wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#histogram .bar"))
    assert {bar.find_element(By.CSS_SELECTOR, ".mono").text for bar in bars} == {"00", "11"}
    browser.save_screenshot(str(ARTIFACTS / "2-bell-done.png"))

    run_example(browser, "long")
    WebDriverWait(browser, 60).until(
        lambda d: d.find_element(By.ID, "job-state").text in ("QUEUED", "RUNNING"))
    browser.find_element(By.ID, "cancel-job").click()
    wait_for_state(browser, "CANCELLED")
    seen = browser.execute_script("return window.seenStates")
    assert seen[-1] == "CANCELLED" and {"QUEUED", "RUNNING"} & set(seen[:-1]), seen  # it changed on the page
    rows = browser.find_elements(By.CSS_SELECTOR, "#jobs tbody tr")
    assert [r.find_element(By.CSS_SELECTOR, ".state").text for r in rows[:2]] == ["CANCELLED", "DONE"]
    browser.save_screenshot(str(ARTIFACTS / "3-cancelled.png"))

    Select(browser.find_element(By.ID, "filter-state")).select_by_value("JOB_STATE_DONE")
    wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#jobs tbody tr")) == 1)

    browser.find_element(By.ID, "tab-backends").click()
    wait.until(lambda d: "ibmq_qasm_simulator" in d.find_element(By.ID, "backends").text)
    browser.save_screenshot(str(ARTIFACTS / "4-backends.png"))
    # One sign-in, any instance of the account: the Standard one lists physical systems.
    Select(browser.find_element(By.ID, "instance-switch")).select_by_visible_text("standard")
    wait.until(lambda d: "ibm_lima" in d.find_element(By.ID, "backends").text)
    assert "ibmq_qasm_simulator" not in browser.find_element(By.ID, "backends").text
    Select(browser.find_element(By.ID, "instance-switch")).select_by_visible_text("lite")
    wait.until(lambda d: "ibmq_qasm_simulator" in d.find_element(By.ID, "backends").text)
    browser.find_element(By.ID, "tab-admin").click()  # the owner administers the account
    wait.until(ec.element_to_be_clickable((By.ID, "list-users"))).click()
    wait.until(lambda d: "admin@localhost" in d.find_element(By.ID, "list").text)
    browser.find_element(By.ID, "list-access_groups").click()  # a form from the API document's request schema
    wait.until(ec.visibility_of_element_located((By.CSS_SELECTOR, "#create-form input[name=name]"))).send_keys(
        "console-testers")
    browser.find_element(By.CSS_SELECTOR, "#create-form button").click()
    wait.until(lambda d: "console-testers" in d.find_element(By.ID, "list").text)
    browser.save_screenshot(str(ARTIFACTS / "5-admin.png"))

    # Deleting and disabling, each confirmed first: an access group, an API key, a member.
    act_on(browser, "console-testers", "delete")
    assert "console-testers" in browser.find_element(By.ID, "confirm").text
    browser.find_element(By.ID, "cancel-action").click()  # kept
    assert "console-testers" in browser.find_element(By.ID, "list").text
    act_on(browser, "console-testers", "delete")
    browser.save_screenshot(str(ARTIFACTS / "6-confirm-delete.png"))
    browser.find_element(By.ID, "confirm-action").click()
    wait.until(lambda d: "console-testers" not in d.find_element(By.ID, "list").text)

    create_in(browser, "api_keys", {"name": "console-key"})
    act_on(browser, "console-key", "disable", confirm=True)
    wait.until(lambda d: row_of(d, "console-key").find_elements(By.XPATH, "td[normalize-space()='true']"))
    act_on(browser, "console-key", "delete", confirm=True)
    wait.until(lambda d: "console-key" not in d.find_element(By.ID, "list").text)
    key_ids = [k["id"] for k in admin_get(rest, "/api/v1/admin/api_keys")["keys"]]
    assert len(key_ids) == 1  # the bootstrap key alone: the one the browser signed in with

    create_in(browser, "users", {"email": "bob@example.org"})  # an operator creates him...
    create_in(browser, "invitations", {"user": "bob@example.org"})  # ...and invites him to the account
    browser.find_element(By.ID, "list-users").click()
    act_on(browser, "bob@example.org", "disable", confirm=True)
    wait.until(lambda d: row_of(d, "bob@example.org").find_elements(By.XPATH, "td[normalize-space()='true']"))
    users = admin_get(rest, "/api/v1/admin/users")["memberships"]
    assert next(m["user"]["disabled"] for m in users if m["user"]["email"] == "bob@example.org") is True
    act_on(browser, "bob@example.org", "remove", confirm=True)
    wait.until(lambda d: "bob@example.org" not in d.find_element(By.ID, "list").text)

    browser.find_element(By.ID, "list-policies").click()  # the owner's own policy may go too, once confirmed
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#list tbody tr [data-action=delete]"))

    browser.set_window_size(390, 844)  # a phone
    browser.find_element(By.ID, "tab-jobs").click()
    browser.save_screenshot(str(ARTIFACTS / "7-phone.png"))
    errors = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert not errors, errors
