// Output of `mmtier stat`: a readable view of one process, a table of many,
// JSON and the Prometheus text exposition format.
#pragma once

#include "stats_reader.h"

#include <functional>
#include <string>
#include <string_view>
#include <vector>

namespace mmtier::cli {

// "key: value" view of one process.
std::string format_detail(const snapshot &s);
// One row per process, with a header (also when there is none).
std::string format_table(const std::vector<snapshot> &all);

// One JSON object for a process (no trailing newline).
std::string format_json(const snapshot &s);
// {"processes":[...]} (no trailing newline).
std::string format_json_all(const std::vector<snapshot> &all);

// Prometheus text exposition format (version 0.0.4), every family with
// HELP and TYPE; empty when there are no processes.
// extra_labels: more labels for a process ("container=\"...\"", or ""),
// after pid and comm (the node agent's container and pod).
std::string format_prometheus(const std::vector<snapshot> &all,
                              const std::function<std::string(int pid)> &extra_labels = {});

// Escaping.
std::string json_string(std::string_view s);           // with the quotes
std::string prometheus_label_value(std::string_view s);  // without quotes

// Heat bucket i as text: its upper bound, "0.125" .. "1".
std::string heat_bucket_label(int i);

const char *policy_name(uint32_t policy);

}  // namespace mmtier::cli
