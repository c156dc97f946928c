// Validates every object of rendered Kubernetes manifests (multi-document
// YAML on stdin or in the files named) against the Kubernetes OpenAPI schemas,
// with the validate() of the kubernetes-models package (its JSON schemas are
// generated from the Kubernetes OpenAPI spec). Exits 1 naming each object
// and field that does not validate, or each kind it has no schema for.
//   node validate.mjs --modules DIR [--allow-kind GROUP/VERSION/KIND]... [FILE...]
// --modules: the directory `npm ci` installed package-lock.json into (the
// build tree's deploy-validator/, set up by the build).
// --allow-kind: a kind with no schema in the package (OpenShift's SCC) that
// another checker validates (api_rules.py); it is reported, not failed.
import { createRequire } from "node:module";
import { readFileSync } from "node:fs";
import { join } from "node:path";

const allowed = new Set();
const files = [];
let modules;
const args = process.argv.slice(2);
for (let i = 0; i < args.length; i++) {
  if (args[i] === "--allow-kind") allowed.add(args[++i]);
  else if (args[i] === "--modules") modules = args[++i];
  else files.push(args[i]);
}
if (!modules) {
  console.error("validate.mjs: --modules DIR (where npm ci installed the validator) is required");
  process.exit(2);
}
// The packages resolve from DIR/node_modules, not from beside this script.
const require = createRequire(join(modules, "package.json"));
const { parseAllDocuments } = require("yaml");
const texts = files.length ? files.map((f) => [f, readFileSync(f, "utf8")]) : [["stdin", readFileSync(0, "utf8")]];

// kubernetes-models/<group>/<version>/<Kind>, core group without a prefix.
function modelFor(apiVersion, kind) {
  const path = `kubernetes-models/${apiVersion}/${kind}`;
  try {
    return require(path)[kind];
  } catch (e) {
    if (e.code === "MODULE_NOT_FOUND" || e.code === "ERR_PACKAGE_PATH_NOT_EXPORTED") return undefined;
    throw e;
  }
}

let failures = 0, checked = 0;
for (const [name, text] of texts) {
  for (const doc of parseAllDocuments(text)) {
    if (doc.errors.length) {
      console.error(`${name}: YAML error: ${doc.errors[0].message}`);
      failures++;
      continue;
    }
    const obj = doc.toJS();
    if (obj == null) continue;
    const id = `${obj.apiVersion ?? "?"} ${obj.kind ?? "?"} ${obj.metadata?.namespace ? obj.metadata.namespace + "/" : ""}${obj.metadata?.name ?? "?"}`;
    const Model = typeof obj.apiVersion === "string" && typeof obj.kind === "string" ? modelFor(obj.apiVersion, obj.kind) : undefined;
    if (!Model) {
      if (allowed.has(`${obj.apiVersion}/${obj.kind}`)) {
        console.log(`skip ${id}: no OpenAPI schema in kubernetes-models (checked by api_rules.py)`);
      } else {
        console.error(`FAIL ${id}: no OpenAPI schema for this kind`);
        failures++;
      }
      continue;
    }
    try {
      new Model(obj).validate();
      console.log(`ok   ${id}`);
      checked++;
    } catch (e) {
      const details = (e.errors ?? []).map((x) => `${x.instancePath || "/"} ${x.message}${x.params?.additionalProperty ? ": " + x.params.additionalProperty : ""}`);
      console.error(`FAIL ${id}: ${details.length ? details.join("; ") : e.message}`);
      failures++;
    }
  }
}
console.log(`${checked} objects valid, ${failures} failed`);
process.exit(failures || checked === 0 ? 1 : 0);
