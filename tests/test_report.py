"""script/report.py: the run report of the token_run fixture, its bad inputs, its baseline comparison (the numbers
of `SLRT_metrics.py --baseline`) and the page in headless Chromium (Debian's chromium driven by selenium)."""
import json
import os
import re
import shutil
import sys

import numpy as np
import pytest

from e2e import check_ok, run

SECTIONS = ("run", "curves", "samples", "buckets", "poincare", "animations")
CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"


def report(*args):
    return run([sys.executable, "script/report.py", *map(str, args)])


def copy_run(source, folder, predictions=True):
    """A run folder with source's log, checkpoint (hard-linked) and, if asked, its test predictions."""
    folder.mkdir()
    names = ["log.txt", "checkpoint.pth"] + (["test_tmp_pres.txt", "test_tmp_refs.txt"] if predictions else [])
    for name in names:
        shutil.copy(source / name, folder / name)
    return folder


def assert_one_error(result, *words):
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert all(word in lines[0] for word in words), lines[0]


@pytest.fixture(scope="module")
def baseline_run(token_run, tmp_path_factory):
    """token_run's folder with other test predictions (each sample given its neighbour's): a second system on the
    same samples."""
    folder = copy_run(token_run, tmp_path_factory.mktemp("baseline") / "run")
    lines = (folder / "test_tmp_pres.txt").read_text(encoding="utf-8").splitlines()
    texts = [line.split(", prediction: ", 1)[1] for line in lines]
    shifted = [line.split(", prediction: ")[0] + ", prediction: " + text for line, text in zip(lines, texts[1:] + texts[:1])]
    (folder / "test_tmp_pres.txt").write_text("\n".join(shifted) + "\n", encoding="utf-8")
    return folder


@pytest.fixture(scope="module")
def compared_report(token_run, baseline_run, tmp_path_factory):
    path = tmp_path_factory.mktemp("report") / "report.html"
    result = check_ok(report(token_run, "--baseline", baseline_run, "--out", path))
    assert result.stdout.strip() == f"report: {path}"
    return path


def test_bad_inputs_give_one_error_line_and_write_nothing(token_run, baseline_run, tmp_path):
    not_a_run = tmp_path / "empty"
    not_a_run.mkdir()
    assert_one_error(report(not_a_run), str(not_a_run), "log.txt")
    no_predictions = copy_run(token_run, tmp_path / "no_predictions", predictions=False)
    assert_one_error(report(no_predictions), str(no_predictions), "test_tmp_pres.txt")
    other_set = copy_run(baseline_run, tmp_path / "other_set")
    for kind in ("pres", "refs"):  # another test set: a sample of another name
        path = other_set / f"test_tmp_{kind}.txt"
        path.write_text(path.read_text(encoding="utf-8").replace("sample: ", "sample: x", 1), encoding="utf-8")
    out = tmp_path / "compared.html"
    assert_one_error(report(token_run, "--baseline", other_set, "--out", out), str(other_set), "another test set")
    assert not out.exists() and not (not_a_run / "report.html").exists() and not (no_predictions / "report.html").exists()
    assert sorted(os.listdir(tmp_path)) == ["empty", "no_predictions", "other_set"]  # no temporary left either


@pytest.mark.slow
def test_baseline_bootstrap_is_slrt_metrics_one(token_run, baseline_run, compared_report):
    """The report's paired bootstrap is `SLRT_metrics.py --baseline` on the same files, number for number."""
    cli = check_ok(run([sys.executable, "SLRT_metrics.py", "--hyp", str(token_run / "test_tmp_pres.txt"), "--baseline",
                        str(baseline_run / "test_tmp_pres.txt"), "--ref", str(token_run / "test_tmp_refs.txt"),
                        "--dataset", "Demo"]))
    expected = json.loads(cli.stdout)
    with open(str(compared_report).replace(".html", "_bootstrap.json"), encoding="utf-8") as f:
        found = json.load(f)
    for key in ("samples", "resamples", "seed", "baseline", "system", "bleu4", "rouge"):
        assert found[key] == expected[key], key
    page = compared_report.read_text(encoding="utf-8")
    assert f"{expected['bleu4']['difference']:.2f}" in page
    counts = found["sentence_bleu"]
    assert counts["wins"] + counts["losses"] + counts["ties"] == 6
    assert f"wins {counts['wins']}, loses {counts['losses']} and ties {counts['ties']}" in page


@pytest.mark.slow
def test_report_has_every_section_and_needs_nothing_beside_it(compared_report):
    page = compared_report.read_text(encoding="utf-8")
    for anchor in SECTIONS + ("baseline",):
        assert f'<section id="{anchor}">' in page, anchor
    assert page.count('data:image/gif;base64,') == 4  # the two worst and the two best as skeletons
    # nothing fetched: no URL but data: ones in any src or href, and a policy that forbids the rest
    assert not re.findall(r'(?:src|href)="(?!data:)', page)
    assert "default-src 'none'" in page


def browser():
    """Headless Chromium from Debian's packages through selenium, or skip (one line) where it is not installed."""
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        pytest.skip("selenium is not installed (pip install -r requirements.txt)")
    if not (os.access(CHROMIUM, os.X_OK) and os.access(CHROMEDRIVER, os.X_OK)):
        pytest.skip(f"no headless Chromium: {CHROMIUM} and {CHROMEDRIVER} come from Debian's chromium and "
                    "chromium-driver, which script/setup.sh installs where apt-get is available and it runs as root")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1280,1600"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    return webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))


@pytest.mark.slow
def test_report_in_headless_chromium(compared_report, tmp_path):
    from io import BytesIO

    from PIL import Image
    from selenium.webdriver.common.by import By
    driver = browser()
    try:
        driver.get(compared_report.as_uri())
        rows = driver.find_elements(By.CSS_SELECTOR, "#sample-table tbody tr")
        assert len(rows) == 6  # one per test sample
        bleu_header = driver.find_elements(By.CSS_SELECTOR, "#sample-table thead th")[3]
        assert bleu_header.text == "BLEU"

        def column(k):
            return [float(r.find_elements(By.TAG_NAME, "td")[k].get_attribute("data-v"))
                    for r in driver.find_elements(By.CSS_SELECTOR, "#sample-table tbody tr")]
        bleu_header.click()
        assert column(3) == sorted(column(3))
        bleu_header.click()
        assert column(3) == sorted(column(3), reverse=True)
        name = rows[0].find_elements(By.TAG_NAME, "td")[0].text
        driver.find_element(By.ID, "filter").send_keys(name)
        shown = [r for r in driver.find_elements(By.CSS_SELECTOR, "#sample-table tbody tr") if r.is_displayed()]
        assert [r.find_elements(By.TAG_NAME, "td")[0].text for r in shown] == [name]
        assert driver.find_element(By.ID, "shown").text == "1"
        errors = [entry for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]
        assert not errors, errors
        requests = [json.loads(entry["message"])["message"] for entry in driver.get_log("performance")]
        urls = [m["params"]["request"]["url"] for m in requests if m["method"] == "Network.requestWillBeSent"]
        assert urls and all(url.startswith(("file:", "data:")) for url in urls), urls
        screenshot = np.asarray(Image.open(BytesIO(driver.get_screenshot_as_png())).convert("L"))
        assert screenshot.std() > 10 and (screenshot < 128).mean() > 0.005  # text and plots, not a blank page
    finally:
        driver.quit()


def test_the_end_of_run_report(token_run, tmp_path, capsys):
    """What fine_tuning.py calls when a run ends: the report of the test predictions; a folder it cannot report
    on is one warning line, not an error (the run has finished and is saved); other tasks get none."""
    from report_html import report_at_end_of_run
    folder = copy_run(token_run, tmp_path / "run")
    assert report_at_end_of_run(str(folder), "SLT") == str(folder / "report.html")
    page = (folder / "report.html").read_text(encoding="utf-8")
    names = [line.split(",")[0][len("sample: "):] for line in (folder / "test_tmp_pres.txt").read_text().splitlines()]
    assert all(f"<tr><td>{name}</td>" in page for name in names) and '<section id="animations">' in page
    assert report_at_end_of_run(str(tmp_path), "SLT") is None
    assert report_at_end_of_run(str(folder), "CSLR") is None
    printed = capsys.readouterr().out.splitlines()
    assert printed[0] == f"report: {folder / 'report.html'}"
    assert printed[1].startswith("warning: no report.html (") and str(tmp_path) in printed[1] and len(printed) == 2
