import test from 'ava';
import { hypervContract } from './contract.ts';

hypervContract(test, '7');
