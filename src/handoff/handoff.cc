// RunHandoff (the command, then the POST) and the report's "handoff" object.
#include <string>

#include "common/json_writer.h"
#include "sluice/embed.h"
#include "sluice/handoff.h"

namespace sluice {

HandoffOutcome RunHandoff(const HandoffOptions& options, const HandoffRun& run,
                          const std::function<std::string(const CommandOutcome&)>& body) {
  HandoffOutcome outcome;
  outcome.command = RunCompletionCommand(options, run);
  if (options.url.empty()) return outcome;
  if (body) {
    HandoffRun with_command = run;
    with_command.report_json = body(outcome.command);
    outcome.webhook = PostReport(options, with_command);
  } else {
    outcome.webhook = PostReport(options, run);
  }
  return outcome;
}

std::string RedactHandoffSecrets(std::string json, const HandoffOptions& options) {
  for (const std::string& secret : options.secret_env_values) {
    if (!secret.empty()) json = RedactSecret(std::move(json), secret);
  }
  return json;
}

std::string HandoffResultJson(const HandoffOutcome& outcome) {
  std::string out;
  JsonWriter w(out);
  w.BeginObject();
  if (outcome.command.ran) {
    const CommandOutcome& c = outcome.command;
    w.Key("command").BeginObject();
    w.Key("ok").Bool(c.ok());
    w.Key("started").Bool(c.started);
    w.Key("exit_status");
    if (c.started && c.signal == 0 && !c.timed_out) {
      w.Int(c.exit_status);
    } else {
      w.Null();
    }
    w.Key("signal").Int(c.signal);
    w.Key("timed_out").Bool(c.timed_out);
    w.Key("elapsed_s").Double(c.elapsed_s);
    w.Key("output_tail").String(c.output_tail);
    if (!c.error.empty()) w.Key("error").String(c.error);
    w.EndObject();
  }
  if (outcome.webhook.ran) {
    const WebhookOutcome& h = outcome.webhook;
    w.Key("webhook").BeginObject();
    w.Key("ok").Bool(h.ok());
    w.Key("http_status").Int(h.http_status);
    w.Key("attempts").Int(h.attempts);
    if (!h.error.empty()) w.Key("error").String(h.error);
    w.EndObject();
  }
  w.EndObject();
  return out;
}

}  // namespace sluice
