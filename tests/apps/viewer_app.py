"""Four runs of a report workflow for the viewer's tests: a clean run, a fallback, a routing
miss and a failure, with a retry, logs and a slow step (the bottleneck).

    Fetch >> Score (BatchNode) >> Analyze >> Decide
    Decide - "publish" >> Publish
    Decide - "review"  >> Review (falls back to a manual review)
"""

from __future__ import annotations

import logging
import time

from pocketflow import BatchNode, Flow, Node

logger = logging.getLogger("reports")
ANALYZE_SECONDS = 0.03  # far longer than any other step: the workflow's bottleneck


class SourceTimeoutError(TimeoutError):
    """The data source did not answer in time."""


class Fetch(Node):
    def __init__(self) -> None:
        super().__init__(max_retries=2)

    def prep(self, shared):
        return shared["run"]

    def exec(self, run):
        if run == 1 and self.cur_retry == 0:
            raise SourceTimeoutError("source did not answer")
        return [3, 1, 2]

    def post(self, shared, prep_res, rows):
        logger.warning("fetched %d rows", len(rows))
        shared["rows"] = rows


class Score(BatchNode):
    def prep(self, shared):
        return shared["rows"]

    def exec(self, row):
        return row * 10

    def post(self, shared, prep_res, scores):
        shared["scores"] = scores


class Analyze(Node):
    def exec(self, prep_res):
        time.sleep(ANALYZE_SECONDS)
        return "analysed"


class Decide(Node):
    def prep(self, shared):
        return shared["route"]

    def post(self, shared, prep_res, exec_res):
        return prep_res


class Publish(Node):
    def prep(self, shared):
        return shared["run"]

    def exec(self, run):
        if run == 4:
            raise RuntimeError("publisher offline")
        return "published"

    def post(self, shared, prep_res, exec_res):
        shared["result"] = exec_res


class Review(Node):
    def exec(self, prep_res):
        raise ValueError("reviewer model refused")

    def exec_fallback(self, prep_res, exc):
        logger.error("review fell back to a manual review")
        return "manual review"

    def post(self, shared, prep_res, exec_res):
        shared["result"] = exec_res


class ReportFlow(Flow):
    """Fetch, score and analyse the data, then publish it or send it for review."""


def build() -> ReportFlow:
    fetch, decide = Fetch(), Decide()
    fetch >> Score() >> Analyze() >> decide
    decide - "publish" >> Publish()
    decide - "review" >> Review()
    return ReportFlow(start=fetch)


def main() -> None:
    logging.basicConfig(level=logging.INFO)
    for run, route in enumerate(("publish", "review", "archive", "publish"), start=1):
        try:
            build().run({"run": run, "route": route})
        except RuntimeError as error:
            print(f"run {run} failed: {error}")
        time.sleep(0.01)


if __name__ == "__main__":
    main()
