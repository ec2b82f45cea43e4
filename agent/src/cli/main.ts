#!/usr/bin/env node
// vmsnap-agent on plain Node (the daemon, and the engine commands when no
// start-up snapshot fits this Node: see bin/vmsnap-agent).
import { main } from './commands.js';

await main(process.argv.slice(2));
