"""The recorder's SDK-specific fast paths, handed to the ``Recorder`` (``fast_paths=``).

Nothing else under ``recorder/`` imports ``opentelemetry.sdk``; without this
package the recorder makes the API's plain calls. Each fast path checks the
SDK's internals it relies on once per process, against the SDK's own result
on a throwaway provider, and falls back to the API's calls (one log line)
when they differ:

- ``histograms``: a node's histogram points queued in process and merged into
  the SDK's own aggregations when a reader collects;
- ``spans``: attributes the recorder made given to the SDK's span without a
  second cleaning, and the sampler's shortcut for children of unsampled spans.
"""

from reasonflow_otel.recorder.fast_paths.histograms import histogram_group
from reasonflow_otel.recorder.fast_paths.spans import drops_unsampled_children, span_writer

__all__ = ["drops_unsampled_children", "histogram_group", "span_writer"]
