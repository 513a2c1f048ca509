import { cases } from "../lib/cases.mjs";
cases("ws");
