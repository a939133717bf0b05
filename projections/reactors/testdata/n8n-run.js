// Runs the n8n workflow of the repository (n8n-webhook-responder.json) the way n8n's
// stock nodes would, on one request: Webhook (the item is {headers, params, query, body}
// with lower-case header names and the body parsed), Crypto (HMAC of the "value"
// expression), If (its conditions, "and"), then the Respond to Webhook node of the branch
// taken. Expressions ("={{ … }}") are evaluated as JavaScript with $json bound, as n8n
// does. Input (stdin): {workflow, secret, headers, body}; output: {branch, status, reply}.
const crypto = require("crypto");

const input = JSON.parse(require("fs").readFileSync(0, "utf8"));
const wf = input.workflow;
const byName = Object.fromEntries(wf.nodes.map((n) => [n.name, n]));
const next = (name, output = 0) => byName[wf.connections[name].main[output][0].node];
const expr = (v, $json) => {
  if (typeof v !== "string" || !v.startsWith("={{")) return v;
  const code = v.slice(3, v.lastIndexOf("}}"));
  return new Function("$json", "return (" + code + ");")($json);
};

const webhook = wf.nodes.find((n) => n.type === "n8n-nodes-base.webhook");
const $json = { headers: input.headers, params: {}, query: {}, body: JSON.parse(input.body) };

const sign = next(webhook.name);
if (sign.type !== "n8n-nodes-base.crypto" || sign.parameters.action !== "hmac") throw new Error("expected a Crypto HMAC node");
$json[sign.parameters.dataPropertyName] = crypto
  .createHmac(sign.parameters.type.toLowerCase(), input.secret)
  .update(String(expr(sign.parameters.value, $json)))
  .digest(sign.parameters.encoding);

const check = next(sign.name);
if (check.type !== "n8n-nodes-base.if") throw new Error("expected an If node");
const c = check.parameters.conditions;
const results = c.conditions.map((cond) => {
  const l = expr(cond.leftValue, $json), r = expr(cond.rightValue, $json);
  switch (cond.operator.operation) {
    case "equals": return l === r;
    case "lt": return l < r;
    default: throw new Error("operator " + cond.operator.operation);
  }
});
const ok = c.combinator === "and" ? results.every(Boolean) : results.some(Boolean);

const respond = next(check.name, ok ? 0 : 1);
if (respond.type !== "n8n-nodes-base.respondToWebhook") throw new Error("expected Respond to Webhook");
const status = (respond.parameters.options || {}).responseCode || 200;
const reply = expr(respond.parameters.responseBody, $json);
process.stdout.write(JSON.stringify({ branch: ok, status, reply }));
